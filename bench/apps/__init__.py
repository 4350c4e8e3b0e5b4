"""The consumers the benchmark runs as subprocesses, one module each."""
