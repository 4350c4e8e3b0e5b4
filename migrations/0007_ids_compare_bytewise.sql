-- Workflow IDs and the other identifiers that indexes hold compare byte by
-- byte (collation "C"), whatever the database's default collation.
--
-- They are opaque names, never sorted for a person to read, but with the
-- database's collation every comparison in their B-trees went through it. In
-- a database created in en_US.UTF-8 (libc), as the official Postgres image
-- creates its own, the benchmark's inline path spent 14.5-15.4 µs of Postgres
-- CPU per workflow against 8.1-9.6 in a "C" database; with these columns in
-- "C", 8.8-9.0 in en_US.UTF-8 (the primary key's comparisons were the
-- difference). "C" also spares these indexes the
-- rebuild a change of the C library's collation rules demands (glibc 2.28).
--
-- Equality does not change meaning: a database's default collation is always
-- deterministic, so equal meant the same bytes before as it does now. Only
-- orderings by these columns change, and the engine orders by none of them
-- but as a tie-break. The table is not rewritten (same type), but each index
-- on a changed column is built again, under a lock that holds back reads and
-- writes of its table meanwhile.

ALTER TABLE workflows
    ALTER COLUMN workflow_id TYPE text COLLATE "C",
    ALTER COLUMN owner TYPE text COLLATE "C",
    ALTER COLUMN source_group TYPE text COLLATE "C",
    ALTER COLUMN source_topic TYPE text COLLATE "C",
    ALTER COLUMN ordering_key TYPE text COLLATE "C";

ALTER TABLE steps
    ALTER COLUMN workflow_id TYPE text COLLATE "C";

ALTER TABLE executors
    ALTER COLUMN executor_id TYPE text COLLATE "C";
