"""How fast the machine itself runs, sampled while a benchmark runs.

A process of its own runs a fixed loop a few times a second and reports the
CPU time it took. On a virtual machine that time is not constant: when the
host gives the machine's cores less (other guests on the same cores), the same
loop takes more CPU time, and so does every process of the benchmark. Its
latency rises with it, whatever Onceflow does; this says when that happened.

Run as a script it is the loop: ``python bench/speed.py EVERY`` prints
``<monotonic seconds> <CPU microseconds>`` every EVERY seconds until killed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

_LOOP = 20_000  # iterations: about 0.6 ms of one core, 0.25% of it at 4 samples/s


def _loop_cpu_us() -> float:
    started = time.thread_time()
    total = 0
    for i in range(_LOOP):
        total += i * i
    return (time.thread_time() - started) * 1e6


class MachineSpeed:
    """Samples the loop between `start()` and `stop()`. `slowdown(begin, end)`
    is the mean of a span's samples over the machine's full speed: the
    fastest tenth of all samples (the first two left out: a fresh process is
    slow). A mean, not a median: a slowdown of 2 s in a 5 s span shows."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (monotonic s, CPU us)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self.every)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="machine-speed", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join()

    def full_speed(self) -> float | None:
        """CPU microseconds of the loop when nothing slows the machine."""
        times = sorted(us for _, us in self.samples[2:])
        return times[len(times) // 10] if times else None

    def slowdown(self, begin: float, end: float) -> float | None:
        """Mean loop time of samples taken in [begin, end) (monotonic
        seconds) over full speed: 1.0 is full speed, 1.5 a third slower."""
        fastest = self.full_speed()
        span = [us for at, us in self.samples[2:] if begin <= at < end]
        if fastest is None or not span:
            return None
        return statistics.fmean(span) / fastest

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            at, us = line.split()
            self.samples.append((float(at), float(us)))


def main() -> None:
    every = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
    try:
        while True:
            print(f"{time.monotonic():.3f} {_loop_cpu_us():.0f}", flush=True)
            time.sleep(every)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
