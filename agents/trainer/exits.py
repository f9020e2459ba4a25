"""How a rank process ends, told before it ends: the ``bye`` reasons.

- ``finished``: :meth:`TrainGuard.close` (or the end of the ``with`` block), or the
  interpreter exiting normally without it (``atexit``);
- ``error``: an uncaught exception reaches ``sys.excepthook`` (the previous hook still
  runs, so the traceback prints as before);
- ``terminated``: ``SIGTERM`` (the launcher stopping the job, an elastic restart), only
  when no one else handles ``SIGTERM``: the handler says bye, restores the default
  action and re-raises the signal so the process dies of it as it would have; an uncaught
  ``KeyboardInterrupt`` (``SIGINT``) too.

A process that ends without any ``bye`` was killed (``SIGKILL``, the OOM killer, a
segfault, ``os._exit``): the node agent sees the exit and the worker blames it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from trainguard.schemas.ranks import ByeReason

__all__ = ["ExitHooks"]

_log = logging.getLogger(__name__)


class ExitHooks:
    """Installs the excepthook, atexit and (when free) SIGTERM handlers; calls ``bye``."""

    def __init__(self, bye: Callable[[ByeReason], None], *,
                 handle_sigterm: bool = True) -> None:
        self._bye = bye
        self._handle_sigterm = handle_sigterm
        self._previous_hook: Callable[..., Any] | None = None
        self._sigterm_installed = False
        self.installed = False

    def install(self) -> None:
        """Chain ``sys.excepthook``, register ``atexit``, take ``SIGTERM`` if default."""
        if self.installed:
            return
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._atexit)
        if self._handle_sigterm and threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                    signal.signal(signal.SIGTERM, self._on_sigterm)
                    self._sigterm_installed = True
            except (ValueError, OSError) as exc:  # not the main interpreter, say
                _log.debug("SIGTERM handler not installed: %s", exc)
        self.installed = True

    def uninstall(self) -> None:
        """Undo :meth:`install` where nobody has chained over us since."""
        if not self.installed:
            return
        self.installed = False
        if sys.excepthook == self._excepthook and self._previous_hook is not None:
            sys.excepthook = self._previous_hook
        atexit.unregister(self._atexit)
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._sigterm_installed = False

    def _excepthook(self, exc_type: type[BaseException], exc: BaseException,
                    tb: TracebackType | None) -> None:
        if self.installed:
            self._safe_bye("terminated" if issubclass(exc_type, KeyboardInterrupt)
                           else "error")
        previous = self._previous_hook or sys.__excepthook__
        previous(exc_type, exc, tb)

    def _atexit(self) -> None:
        if self.installed:
            self._safe_bye("finished")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._safe_bye("terminated")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _safe_bye(self, reason: ByeReason) -> None:
        try:
            self._bye(reason)
        except Exception:  # the process is ending anyway; never mask its real exit
            _log.exception("bye reason=%s failed", reason)
