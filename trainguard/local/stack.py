"""Everything a local run needs, started in order and stopped in reverse: :class:`LocalStack`.

A LocalStack-style harness for the demo, the scorecard, the benchmarks and the
integration tests: an optional pager (a recording webhook receiver, with a real
Alertmanager in front of it), a local Kafka broker (unless bootstrap servers are given),
the run's topics, and one stream worker process owning its store. All files live under
one data directory::

    <data_dir>/kafka/            the broker's data and logs (when the stack starts one)
    <data_dir>/kafka-secure/     ...or with ``secure=True``, and security/ in it: the
                                 CA, broker certificate and SCRAM passwords
    <data_dir>/alertmanager/     Alertmanager's config, state and log
    <data_dir>/store/            the embedded store (unless a store URL is given)
    <data_dir>/worker/           the worker's local state
    <data_dir>/logs/worker.log   the worker's output
    <data_dir>/keys/             the fleet secret (with ``auth=True``), mode 0600

With ``secure=True`` (or a secure ``broker``) clients use SASL_SSL: the stack creates the
topics as ``admin``, grants the deployment's ACLs
(:func:`~trainguard.pipeline.kafka_acls.pipeline_acls`), runs the worker as ``worker`` and
hands :attr:`LocalStack.agent_security` to whatever plays the agents.

With ``auth=True`` the worker requires authenticated input (``--fleet-secret-file``) and
:attr:`LocalStack.signer` signs as any node, for the simulated agents of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from trainguard.errors import ConfigError, TrainguardError
from trainguard.local.alertmanager import (
    AlertmanagerError,
    AlertmanagerNotFoundError,
    LocalAlertmanager,
)
from trainguard.local.broker import LocalBroker, free_port, free_ports, port_free
from trainguard.local.webhook_server import RecordingWebhookServer
from trainguard.local.worker import WorkerProcess
from trainguard.pipeline.config import DEFAULT_APP_ID
from trainguard.pipeline.kafka_acls import apply_acls, pipeline_acls
from trainguard.pipeline.kafka_admin import ensure_pipeline_topics
from trainguard.pipeline.store import Secret, Store
from trainguard.schemas.auth import FleetSigner
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity
from trainguard.schemas.keyfiles import init_fleet_secrets, read_fleet_secrets
from trainguard.schemas.topics import Topics

__all__ = ["LocalStack", "PagerMode", "WorkerConfigSource"]

log = logging.getLogger(__name__)

#: ``off``: no pager; ``receiver``: the webhook receiver only; ``alertmanager``: receiver
#: behind a real Alertmanager (which must start); ``auto``: Alertmanager when it starts,
#: else the receiver alone.
PagerMode = Literal["off", "receiver", "alertmanager", "auto"]

#: Builds the worker's TOML config once the pager runs (it may name the pager's URLs).
WorkerConfigSource = Path | Callable[["LocalStack"], Path | None] | None


def _quiet(_line: str) -> None:
    """Print nothing."""


class LocalStack:
    """Pager, broker, topics and a worker on this machine, as one context manager.

    ``out`` receives one line per service started or stopped (the demo prints them).
    With ``start_worker=False`` the worker waits for :meth:`start_worker`, e.g. until a
    backlog has been produced. ``broker``: a local broker started elsewhere (a test
    session's), used and left running.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        bootstrap: str = "",
        kafka_port: int | None = None,
        secure: bool = False,
        broker: LocalBroker | None = None,
        topic_prefix: str = "tg",
        partitions: int = 3,
        store: str = "",
        store_password: Secret | None = None,
        pager: PagerMode = "off",
        worker_config: WorkerConfigSource = None,
        start_worker: bool = True,
        app_id: str | None = None,
        batch_within: float | None = 0.2,
        log_level: str = "INFO",
        worker_args: Sequence[str] = (),
        auth: bool = False,
        out: Callable[[str], None] = _quiet,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        #: The fleet secrets file when the worker requires authenticated input.
        self.fleet_secret_file = self.data_dir / "keys" / "fleet-secrets.json" if auth else None
        #: Signs as any node of the run (set by :meth:`start` with ``auth``).
        self.signer: FleetSigner | None = None
        if self.fleet_secret_file is not None:
            worker_args = [*worker_args, "--fleet-secret-file", str(self.fleet_secret_file)]
        self.topics = Topics(topic_prefix)
        self.partitions = partitions
        self.pager_mode: PagerMode = pager
        self.autostart_worker = start_worker
        self._worker_config = worker_config
        self._out = out
        if broker is not None and bootstrap:
            raise ConfigError("give the local stack a broker or bootstrap servers, not both")
        if secure and bootstrap:
            raise ConfigError("secure mode makes its own credentials for a local broker; "
                              f"it cannot secure the given bootstrap servers {bootstrap!r}")
        self._own_broker = broker is None and not bootstrap
        self.broker = broker if broker is not None else (
            # Apart from a plain broker's: its storage holds no SCRAM users.
            _broker(self.data_dir / ("kafka-secure" if secure else "kafka"), kafka_port,
                    secure) if not bootstrap else None)
        self.secure = self.broker is not None and self.broker.secure
        self.bootstrap = bootstrap or (self.broker.bootstrap if self.broker else "")
        self.receiver: RecordingWebhookServer | None = None
        self.alertmanager: LocalAlertmanager | None = None
        self.worker = WorkerProcess(
            self.bootstrap, store or f"chdb://{self.data_dir / 'store'}",
            topic_prefix=topic_prefix, data_dir=self.data_dir / "worker",
            log_path=self.data_dir / "logs" / "worker.log", app_id=app_id,
            batch_within=batch_within, extra_args=worker_args, log_level=log_level,
            password=store_password)
        self._started: list[str] = []

    @property
    def store(self) -> Store:
        """The worker's store, read through the worker."""
        if self.worker.reader is None:
            raise TrainguardError("the local stack's worker is not serving its store")
        return self.worker.reader

    def security(self, user: str) -> KafkaSecurity:
        """Client settings of a local broker's user (``admin``, ``worker``, ``agent``)."""
        return self.broker.client_security(user) if self.secure and self.broker else PLAINTEXT

    @property
    def agent_security(self) -> KafkaSecurity:
        """What simulated agents produce with: the ``agent`` user when secure."""
        return self.security("agent")

    @property
    def pager_route(self) -> str:
        """How pages travel, in words."""
        if self.alertmanager is not None and self.receiver is not None:
            return f"Alertmanager {self.alertmanager.url} → local receiver {self.receiver.url}"
        if self.receiver is not None and self.pager_mode == "receiver":
            return f"local webhook receiver {self.receiver.url}"
        if self.receiver is not None:
            return (f"local webhook receiver {self.receiver.url} (Alertmanager not installed: "
                    "`make alertmanager`)")
        return "nowhere (no pager)"

    def start(self) -> LocalStack:
        """Start the pager, the broker, the topics and (unless deferred) the worker."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.fleet_secret_file is not None:
            if not self.fleet_secret_file.exists():
                init_fleet_secrets(self.fleet_secret_file)
            self.signer = FleetSigner(read_fleet_secrets(self.fleet_secret_file)[0])
            self._out(f"agents sign their messages; the worker refuses unsigned ones "
                      f"(fleet secret {self.fleet_secret_file})")
        if self.pager_mode != "off":
            self._start_pager()
            self._out(f"pages go to {self.pager_route}")
        if self.broker is not None and self._own_broker:
            mode = "SASL_SSL + ACLs" if self.secure else "plaintext"
            self._out(f"starting local Kafka {self.broker.bootstrap}, {mode} "
                      f"(data in {self.broker.data_dir})")
            self._started.append("broker")
            self.broker.start()
        admin = self.security("admin")
        ensure_pipeline_topics(self.bootstrap, self.topics, partitions=self.partitions,
                               security=admin)
        if self.secure:
            rules = pipeline_acls(self.topics, agents=["agent"], workers=["worker"],
                                  app_id=self.worker.app_id or DEFAULT_APP_ID)
            apply_acls(self.bootstrap, admin, rules)
            self.worker.security = self.security("worker")
        if self.autostart_worker:
            self.start_worker()
        return self

    def start_worker(self, timeout: float = 90.0) -> WorkerProcess:
        """Start the worker (with the configured TOML) and wait until it serves the store."""
        config = self._worker_config
        self.worker.config = config(self) if callable(config) else config
        self._out(f"starting stream worker → store {self.worker.url} "
                  f"(log: {self.worker.log_path})")
        self._started.append("worker")
        self.worker.start(timeout)
        return self.worker

    def _start_pager(self) -> None:
        self.receiver = RecordingWebhookServer()
        self._started.append("pager")
        self.receiver.start()
        if self.pager_mode == "receiver":
            return
        am = None
        try:
            am = LocalAlertmanager(self.receiver.url_for("/pager"),
                                   self.receiver.url_for("/tickets"),
                                   data_dir=self.data_dir / "alertmanager")
            am.start()
            self.alertmanager = am
        except AlertmanagerNotFoundError:
            if self.pager_mode == "alertmanager":
                raise
        except AlertmanagerError as exc:
            if am is not None:
                am.close()
            if self.pager_mode == "alertmanager":
                raise
            # `auto`: pages still reach the receiver, straight from the worker.
            log.warning("alertmanager did not start; delivering straight to the receiver "
                        "error=%s", exc)

    def close(self) -> None:
        """Stop what :meth:`start` started: worker, broker, then the pager.

        The worker is stopped whoever started it (tests call ``stack.worker.start()``
        themselves): a worker left running outlives the broker and spins for hours.
        """
        if "worker" in self._started or self.worker.alive():
            self.worker.stop()
            self._out("stream worker stopped")
        if "broker" in self._started and self.broker is not None:
            self.broker.stop()
            self._out("local Kafka stopped")
        if self.alertmanager is not None:
            self.alertmanager.close()
            self.alertmanager = None
        if self.receiver is not None:
            self.receiver.stop()
        self._started.clear()

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _broker(data_dir: Path, port: int | None, secure: bool) -> LocalBroker:
    """A broker on ``port`` when it is free (else any free port), or on two free ports."""
    if port is None:
        port, controller_port = free_ports(2)
        return LocalBroker(data_dir, port, controller_port, secure=secure)
    return LocalBroker(data_dir, port if port_free(port) else free_port(), secure=secure)
