"""Peak resident memory of this process during a block (sampled), for metrics.json and benchmarks."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """`with PeakMemory() as peak: ...; peak.mb` — RSS sampled every `interval` seconds, plus at start and end."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)
