"""Peak memory of the tritonserver process tree while a measurement runs."""
from __future__ import annotations

import threading

import psutil

__all__ = ["TreeRSS"]


class TreeRSS:
    """Peak summed RSS of the tritonserver processes started by this process (server + stubs),
    sampled every 50 ms while active. Shared pages count once per process, so it overestimates
    (the 11 stubs share their libraries and the shared-memory tensors between them).

    With `pss=True` also the peak summed PSS (each shared page split between the processes that
    map it: what the tree really holds), read from /proc/PID/smaps_rollup (slower: ~1 ms per
    process and sample)."""

    def __init__(self, pss: bool = False) -> None:
        self.peak = 0
        self.peak_pss = 0
        self._pss = pss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _tree() -> list[psutil.Process]:
        procs = []
        for child in psutil.Process().children(recursive=False):
            try:
                if child.name() == "tritonserver":
                    procs += [child, *child.children(recursive=True)]
            except psutil.Error:
                continue
        return procs

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            total = pss = 0
            for proc in self._tree():
                try:
                    if self._pss:
                        info = proc.memory_full_info()
                        total, pss = total + info.rss, pss + info.pss
                    else:
                        total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, pss)

    def __enter__(self) -> TreeRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
