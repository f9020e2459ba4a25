"""``busy``: a rank says it is in a long phase of its own while its peers may wait for it.

With DDP, rank 0 often saves the checkpoint (or runs an evaluation) alone while the other
ranks go on to the next all-reduce and wait there. To the worker that looks like the
collective tracing's "peers wait, one live rank never arrived" (``rank_hung``). The kit
therefore says ``busy`` (with the phase and since when) when such a phase starts and every
``every_s`` while it lasts, from a thread of its own; the worker does not name a rank whose
``busy`` is fresh. A rank that hangs inside the phase still says ``busy`` (its thread
runs); one stopped (``SIGSTOP``) or killed does not, and the node agent reports those.

    with guard.busy("eval"):
        evaluate(model)

:meth:`TrainGuard.save`/``load``/``dcp_*`` use it with the phase ``checkpoint``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

from trainguard.schemas.ranks import BusyPhase

__all__ = ["BusyPhaseReporter"]

_log = logging.getLogger(__name__)

#: Phases shorter than this send nothing but the first ``busy``.
_MIN_EVERY_S: Final = 0.05


class BusyPhaseReporter:
    """A context manager: ``busy`` now, then every ``every_s`` until the phase ends.

    ``send(phase, since)`` hands one ``busy`` to the reporter (``since``: wall-clock
    seconds); it must not raise (the reporter's methods never do). Re-entrant: a nested
    phase (a save inside an evaluation) keeps the outer one's reporting.
    """

    def __init__(self, send: Callable[[BusyPhase, float], object], phase: BusyPhase, *,
                 every_s: float, clock: Callable[[], float] = time.time) -> None:
        if every_s < _MIN_EVERY_S:
            raise ValueError(f"busy every_s {every_s}: expected >= {_MIN_EVERY_S}")
        self._send, self.phase, self._every_s, self._clock = send, phase, every_s, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._depth = 0
        #: ``busy`` events handed to the reporter.
        self.sent = 0

    def __enter__(self) -> BusyPhaseReporter:
        self._depth += 1
        if self._depth == 1:
            self._stop.clear()
            since = self._clock()
            self._beat(since)
            self._thread = threading.Thread(target=self._run, args=(since,), daemon=True,
                                            name=f"trainguard-busy-{self.phase}")
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
                self._thread = None

    def _run(self, since: float) -> None:
        while not self._stop.wait(self._every_s):
            self._beat(since)

    def _beat(self, since: float) -> None:
        try:
            self._send(self.phase, since)
            self.sent += 1
        except Exception:  # never take the training process down
            _log.exception("busy report failed phase=%s", self.phase)
