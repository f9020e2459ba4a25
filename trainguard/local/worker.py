"""One stream worker process on this machine: start it, wait until it serves its store, stop it.

The one place that starts ``python -m trainguard.cli worker`` as a child process, for the
demo, the scorecard, the benchmarks and the integration tests. :class:`WorkerProcess`
builds the command line, appends the worker's output to a log file, waits until the
worker owns an embedded store (or has migrated a server store) and reads it back, and
names the log's tail whenever the worker is found dead.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from trainguard.errors import TrainguardError
from trainguard.pipeline.store import (
    QueryResult,
    Secret,
    Store,
    StoreUrl,
    open_store,
    owner_reader,
)
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["WorkerError", "WorkerProcess"]

#: A query that succeeds once the worker has migrated the store.
_READY_SQL = "SELECT count() FROM {database}.sample_batches"


class WorkerError(TrainguardError):
    """The stream worker exited, or did not serve its store in time."""


class WorkerProcess:
    """``trainguard worker`` as a child process, and a reader of the store it writes.

    ``start()`` may be called again after :meth:`kill` or :meth:`stop` (a restart); the
    log file is appended to across starts. ``clock`` and ``sleep`` time the waits.
    """

    def __init__(
        self,
        bootstrap: str,
        store: str | StoreUrl,
        *,
        topic_prefix: str,
        data_dir: Path,
        log_path: Path,
        app_id: str | None = None,
        batch_within: float | None = None,
        config: Path | None = None,
        extra_args: Sequence[str] = (),
        log_level: str = "INFO",
        password: Secret | None = None,
        security: KafkaSecurity = PLAINTEXT,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The worker gets the URL as given: ``str()`` of a server URL hides its password.
        self.store_arg = store if isinstance(store, str) else str(store)
        self.url = store if isinstance(store, StoreUrl) else StoreUrl.parse(store, password)
        self.bootstrap = bootstrap
        self.prefix = topic_prefix
        self.data_dir = data_dir
        self.log_path = log_path
        self.app_id = app_id
        self.batch_within = batch_within
        self.config = config
        self.extra_args = tuple(extra_args)
        self.log_level = log_level
        #: How the worker authenticates to Kafka; its password travels as a file path.
        self.security = security
        self.python = python
        self._clock = clock
        self._sleep = sleep
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: Store | None = None

    def command(self, extra_args: Sequence[str] = ()) -> list[str]:
        """The command line :meth:`start` runs (``extra_args`` after the configured ones)."""
        optional = [
            *(["--app-id", self.app_id] if self.app_id is not None else []),
            *(["--batch-within", f"{self.batch_within:g}"] if self.batch_within is not None
              else []),
            *(["--config", str(self.config)] if self.config is not None else []),
        ]
        return [
            self.python, "-m", "trainguard.cli", "--log-level", self.log_level, "worker",
            "--bootstrap", self.bootstrap, *self.security.cli_args(),
            "--store", self.store_arg,
            "--topic-prefix", self.prefix, "--data-dir", str(self.data_dir),
            *optional, *self.extra_args, *extra_args,
        ]

    @property
    def pid(self) -> int | None:
        """The process id of the last start, or ``None`` before the first."""
        return self.proc.pid if self.proc is not None else None

    def spawn(self, extra_args: Sequence[str] = ()) -> None:
        """Start the process without waiting for it; see :meth:`start`."""
        if self.alive():
            raise WorkerError(f"the stream worker is already running (pid {self.pid})")
        self.reader = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(self.command(extra_args), stdin=subprocess.DEVNULL,
                                         stdout=fh, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 90.0, extra_args: Sequence[str] = ()) -> Store:
        """Start the worker and wait until it serves its store; return the reader."""
        self.spawn(extra_args)
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0, poll: float = 0.2) -> Store:
        """Wait until the worker owns (embedded) or has migrated (server) its store."""
        deadline = self._clock() + timeout
        last: Exception | None = None
        while True:
            self.check_alive()
            try:
                store = self._open_reader()
                if store is not None:
                    store.query(_READY_SQL)
                    self.reader = store
                    return store
            except TrainguardError as exc:
                last = exc
            if self._clock() >= deadline:
                break
            self._sleep(poll)
        why = f" (last error: {last})" if last is not None else ""
        raise WorkerError(f"the stream worker did not serve the store {self.url} within "
                          f"{timeout:g}s{why}; log {self.log_path}:\n{self.log_tail()}")

    def _open_reader(self) -> Store | None:
        if not self.url.embedded:
            return open_store(self.url)
        # Only the process we started counts as the owner (a killed earlier run may have
        # left its owner.json), and we never open the chdb directory ourselves: chdb binds
        # a process to one directory for its lifetime.
        return owner_reader(self.url, pid=self.pid)

    def alive(self) -> bool:
        """True while the started process runs."""
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`WorkerError` with the log's tail unless the process runs."""
        if self.proc is None:
            raise WorkerError("the stream worker was never started")
        if self.proc.poll() is not None:
            raise WorkerError(f"the stream worker exited with {self.proc.returncode}; log "
                              f"{self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the worker's log ('' before it has one)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, sql: str) -> QueryResult:
        """Run a read through the worker (``{database}`` is replaced)."""
        if self.reader is None:
            raise WorkerError("the stream worker is not serving its store; start() it first")
        return self.reader.query(sql)

    def scalar(self, sql: str) -> int:
        """The integer in the first cell of ``sql``'s result."""
        return int(self.query(sql).scalar())

    def wait_for(self, sql: str, expected: int, timeout: float = 60.0, poll: float = 0.3) -> int:
        """Poll ``sql`` until it reaches ``expected``; return the last value seen."""
        deadline = self._clock() + timeout
        value = -1
        while self._clock() < deadline:
            self.check_alive()
            value = self.scalar(sql)
            if value >= expected:
                return value
            self._sleep(poll)
        return value

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._drop_reader()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; no-op when not running."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._drop_reader()

    def _drop_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
