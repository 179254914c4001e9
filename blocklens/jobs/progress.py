"""Progress of a run: what a callback gets (:class:`Progress`), and one phase's bar and callback (:class:`Tracker`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Progress", "Tracker"]


@dataclass(frozen=True)
class Progress:
    """Where a run stands, as its ``on_progress`` callback gets it: ``done`` of ``total`` units (images, icons)
    in ``phase``, ``failed`` of them, ``eta`` seconds left (None until something was done), ``elapsed``."""

    phase: str
    done: int
    total: int
    failed: int = 0
    eta: float | None = None
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


class Tracker:
    """One phase's progress: a bar with rate and ETA on stderr (when ``show``) and ``on_progress(Progress)`` after
    every step, ``done`` never going down. ``update(n)`` counts ``n`` more units done (tqdm's name), ``fail(n)``
    ``n`` more done that failed. A context manager (closes the bar)."""

    def __init__(self, phase: str, total: int, *, on_progress: Callable[[Progress], None] | None = None,
                 show: bool = False, desc: str | None = None, unit: str = "it"):
        import time

        from tqdm.auto import tqdm

        self.phase, self.total, self.done, self.failed = phase, int(total), 0, 0
        self._on, self._t0, self._clock = on_progress, time.perf_counter(), time.perf_counter
        self._bar = tqdm(total=self.total, desc=desc or phase, unit=unit, disable=not show or not self.total,
                         smoothing=0.1, dynamic_ncols=True)
        self._tell()

    def progress(self) -> Progress:
        elapsed = self._clock() - self._t0
        eta = elapsed * (self.total - self.done) / self.done if 0 < self.done < self.total else (
            0.0 if self.done >= self.total else None)
        return Progress(self.phase, self.done, self.total, self.failed, eta, elapsed)

    def _tell(self) -> None:
        if self._on is not None:
            self._on(self.progress())

    def update(self, n: int = 1) -> None:
        n = max(0, min(int(n), self.total - self.done))
        self.done += n
        self._bar.update(n)
        self._tell()

    def fail(self, n: int = 1) -> None:
        self.failed += int(n)
        self.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


