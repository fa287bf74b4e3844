"""Peak memory of one phase of work (a training segment, an evaluation), not of the whole process.

``resource.getrusage(...).ru_maxrss`` is the process's lifetime maximum: two phases in one
process (an ``image_text`` then a ``text_only`` run) would report the same figure. Here a
thread samples the process's resident set size (psutil) while the phase runs; on CUDA the
allocator's own peak is reset when the phase starts and read when it ends.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

MB = 2**20


class PeakMemory:
    """The highest resident set size (and CUDA allocation) seen since :meth:`start`, in MB.

    Sampling every ``interval`` seconds can miss a spike shorter than that; the RSS is also
    read at start, at every :meth:`peak` call and at stop.
    """

    def __init__(self, interval: float = 0.05):
        import psutil

        self.interval = interval
        self._process = psutil.Process()
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = False

    def _sample(self) -> None:
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> "PeakMemory":
        """Begin a phase: forget earlier peaks (the CUDA allocator's too) and start sampling."""
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def peak(self) -> dict:
        """``{"process_rss": MB, "gpu": MB or None}``: the peaks so far in this phase."""
        import torch

        self._sample()
        gpu = torch.cuda.max_memory_allocated() / MB if self._cuda else None
        return {"process_rss": round(self._peak_rss / MB, 1), "gpu": None if gpu is None else round(gpu, 1)}

    def stop(self) -> dict:
        """End the phase; returns :meth:`peak`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak()


@contextmanager
def peak_memory(interval: float = 0.05) -> Iterator[dict]:
    """Measure the phase in the ``with`` block; on exit the yielded dict holds :meth:`PeakMemory.peak`."""
    result: dict = {}
    meter = PeakMemory(interval).start()
    try:
        yield result
    finally:
        result.update(meter.stop())
