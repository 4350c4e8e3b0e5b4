"""The chaos checker sees what it must: a clean run passes, then each kind of
violation written into its tables by hand is found and counted, once."""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.chaos import ChaosConfig, check, discard, run_chaos


def test_the_checker_counts_each_kind_of_violation(
    postgres_server_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = ChaosConfig(
        records=300, rate=300.0, keys=20, services=1, faults=0, kinds=("kill",), keep=True
    )
    result = run_chaos(
        config, server_url=postgres_server_url, bootstrap=kafka_bootstrap, say=lambda _: None
    )
    try:
        assert result.ok, result.problems()
        url, topic, group = result.database_url, result.topic, result.group
        clean = check(url, kafka_bootstrap, topic, group)
        assert clean.problems() == []
        assert (clean.produced, clean.success) == (300, 300)

        with psycopg.connect(url, autocommit=True) as conn:
            first, second, third, later = [
                r[0]
                for r in conn.execute(
                    "SELECT workflow_id FROM public.chaos_effects WHERE seq > 0 ORDER BY id LIMIT 4"
                )
            ]
            # The effect written twice.
            conn.execute(
                "INSERT INTO public.chaos_effects"
                ' (workflow_id, event_id, key, seq, prev_seq, partition, "offset", executor)'
                ' SELECT workflow_id, event_id, key, seq, prev_seq, partition, "offset", executor'
                " FROM public.chaos_effects WHERE workflow_id = %s",
                (first,),
            )
            # The workflow completed a second time (the trigger logs both).
            for status in ("PENDING", "SUCCESS"):
                conn.execute(
                    "UPDATE onceflow.workflows SET status = %s WHERE workflow_id = %s",
                    (status, second),
                )
            # A record run before its predecessor's effect had committed.
            conn.execute(
                "UPDATE public.chaos_effects SET prev_seq = NULL WHERE workflow_id = %s", (third,)
            )
            # A record whose workflow is gone (and its effect, not to count it as a stray).
            conn.execute("DELETE FROM onceflow.workflows WHERE workflow_id = %s", (later,))
            conn.execute("DELETE FROM public.chaos_effects WHERE workflow_id = %s", (later,))

        found = check(url, kafka_bootstrap, topic, group)
        assert found.dup_effects == 1
        assert found.dup_completions == 1
        assert found.order_violations == 1
        assert list(found.missing.values()) == ["no workflow"]
        assert found.success == 299
        assert len(found.problems()) == 4, found.problems()
    finally:
        discard(result, server_url=postgres_server_url, bootstrap=kafka_bootstrap)
