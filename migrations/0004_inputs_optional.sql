-- A workflow that runs inline completes in the transaction that records it:
-- nothing ever runs it again, so by default its input is not kept (the
-- Engine's `inline_inputs`; a Kafka-fed row still says where its record is,
-- in source_topic, source_partition and source_offset). Its input is NULL.
-- Dropping NOT NULL changes the catalog only: no rewrite, no scan.

ALTER TABLE workflows ALTER COLUMN input DROP NOT NULL;
