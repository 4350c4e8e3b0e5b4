"""Benchmarks: scripts that print figures, never timed tests (DESIGN.md §8).

    python -m bench.throughput [--quick | --scaling | --backlog N]

`bench.throughput` is the entry point; `bench.workload` is the work every
system under test does; `bench.apps` holds the consumers it runs as
subprocesses.
"""
