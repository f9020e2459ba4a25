"""A single-node local Kafka broker (KRaft, combined broker+controller) for demos and tests.

The broker jars are fetched once from Maven Central with ``mvn`` (see
``infra/kafka/pom.xml``) into a cache directory, and the broker runs as a ``java``
child in its own session so it outlives the command that started it. Everything the
broker writes (configuration, pid file, data, logs) lives under one data directory.

With ``secure=True`` clients connect over SASL_SSL (SCRAM-SHA-512 users created when the
storage is formatted, TLS with a certificate made for this data directory) and Kafka's
standard authorizer refuses what no ACL allows; see :mod:`trainguard.local.broker_security`.
:meth:`LocalBroker.client_security` gives each user's client settings.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from trainguard.errors import BrokerError
from trainguard.local.broker_security import (
    ADMIN,
    LocalCredentials,
    ensure_credentials,
    scram_format_args,
    secure_listener_properties,
)
from trainguard.local.maven import FetchProgress, run_maven
from trainguard.pipeline.kafka_admin import wait_for_broker
from trainguard.resources import infra_candidates
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "LocalBroker",
    "dedupe_buffer_bytes",
    "default_cache_dir",
    "fetch_jars",
    "free_port",
    "free_ports",
    "kafka_home",
]

log = logging.getLogger(__name__)

#: Must match ``<kafka.version>`` in ``infra/kafka/pom.xml`` (a test checks it).
KAFKA_VERSION = "4.4.0"

_MARKER = ".fetched"
#: Written beside the formatted storage of a secure broker: its SCRAM users exist.
_SCRAM_MARKER = "scram.formatted"
_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_HEAP_RE = re.compile(r"([1-9][0-9]*)([kKmMgG]?)")
_HEAP_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: Kafka's own default for the log cleaner's key map, the most this broker asks for.
_DEDUPE_MAX = 128 << 20
#: Kafka refuses a map of 1 MiB or less per cleaner thread (one here).
_DEDUPE_MIN = 2 << 20


def dedupe_buffer_bytes(heap: str) -> int:
    """The log cleaner's key map for a broker of ``heap`` (``512m``): an eighth of the heap.

    Kafka allocates the map whole at start, 128 MiB by default. In a 256 MiB heap that is one
    contiguous half of it, which G1 cannot always find: the broker then dies at start with
    ``OutOfMemoryError`` in ``SkimpyOffsetMap`` (seen once in CI). A smaller map only makes
    compaction take more passes over a log with more keys than it holds (~1.3 million in 32
    MiB); this broker's compacted topics (the worker's tables and state) hold thousands.
    """
    match = _HEAP_RE.fullmatch(heap)
    if match is None:
        raise BrokerError(f"invalid heap size '{heap}'; expected e.g. 512m or 1g")
    size = int(match[1]) * _HEAP_UNITS[match[2].lower()]
    return max(_DEDUPE_MIN, min(_DEDUPE_MAX, size // 8))


def kafka_home() -> Path:
    """Return the directory holding the broker's ``pom.xml`` and ``log4j2.yaml``."""
    candidates = infra_candidates("kafka")
    for candidate in candidates:
        if (candidate / "pom.xml").is_file():
            return candidate
    raise BrokerError(
        "cannot find the Kafka broker files (pom.xml, log4j2.yaml); looked in: "
        + ", ".join(f"'{c}'" for c in candidates)
    )


def default_cache_dir() -> Path:
    """Return ``~/.cache/trainguard/kafka-<version>``, where fetched jars are kept."""
    return Path.home() / ".cache" / "trainguard" / f"kafka-{KAFKA_VERSION}"


def fetch_jars(cache_dir: Path | None = None, mvn: str = "mvn",
               progress: Callable[[str], None] | None = None) -> Path:
    """Copy the pinned Kafka jars into ``<cache_dir>/libs`` with Maven and return that dir.

    Idempotent: a marker file is written after a successful copy, and later calls return
    at once while it exists and the directory still holds jars. While Maven runs,
    ``progress`` (default: the log at INFO) gets a line per downloaded jar and phase, and
    a "still running" line after 10 s without one (:class:`~trainguard.local.maven.FetchProgress`).
    """
    cache = (cache_dir or default_cache_dir()).expanduser().resolve()
    libs = cache / "libs"
    marker = cache / _MARKER
    if marker.is_file() and any(libs.glob("*.jar")):
        log.debug("kafka jars cached libs=%s", libs)
        return libs
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise BrokerError(
            f"Maven executable '{mvn}' not found on PATH; install Maven (e.g. "
            "'apt-get install maven') to fetch the Kafka broker jars"
        )
    libs.mkdir(parents=True, exist_ok=True)
    pom = kafka_home() / "pom.xml"
    # Batch mode without -q: one "Downloaded ..." line per file, which the progress reads.
    cmd = [mvn_path, "-B", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}"]
    log.info("fetching kafka jars version=%s libs=%s", KAFKA_VERSION, libs)
    emit = progress or (lambda text: log.info("kafka fetch: %s", text))
    reporter = FetchProgress(emit)
    done = run_maven(cmd, reporter, timeout_s=_MVN_TIMEOUT_S)
    if done.returncode != 0 or not any(libs.glob("*.jar")):
        raise BrokerError(f"'{mvn}' failed to fetch Kafka {KAFKA_VERSION} jars into '{libs}' "
                          f"(exit {done.returncode}):\n{_last_lines(done.tail)}")
    marker.write_text(f"kafka_version={KAFKA_VERSION}\n", encoding="utf-8")
    log.info("fetched kafka jars libs=%s jars=%d seconds=%.1f", libs, reporter.jars,
             reporter.elapsed_s)
    return libs


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return one TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` saw: ``running`` means alive and accepting TCP."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path


class LocalBroker:
    """One local KRaft broker whose files all live under ``data_dir``.

    ``start()`` and ``stop()`` are idempotent and work across processes: the pid file in
    ``data_dir`` is the source of truth, so one command can start it and another stop it.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int | None = None,
        *,
        libs_dir: Path | None = None,
        java: str = "java",
        heap: str = "512m",
        secure: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.controller_port = port + 1 if controller_port is None else controller_port
        for name, value in (("port", self.port), ("controller port", self.controller_port)):
            if not 1 <= value <= 65535:
                raise BrokerError(f"invalid {name} {value}; expected 1-65535")
        if self.port == self.controller_port:
            raise BrokerError(f"port and controller port are both {port}; they must differ")
        self._dedupe_bytes = dedupe_buffer_bytes(heap)  # checks the heap size too
        self.libs_dir = libs_dir
        self.java = java
        self.heap = heap
        self.secure = secure
        self._proc: subprocess.Popen[bytes] | None = None
        self._credentials: LocalCredentials | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for clients, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> LocalCredentials:
        """The secure broker's CA, keystore and passwords (written on first use)."""
        if not self.secure:
            raise BrokerError(f"the broker in '{self.data_dir}' runs in plain mode; it has "
                              "no credentials (start it with secure=True)")
        if self._credentials is None:
            self._credentials = ensure_credentials(self.data_dir / "security")
        return self._credentials

    def client_security(self, user: str = ADMIN) -> KafkaSecurity:
        """Client settings for ``user`` (``admin``, ``worker``, ``agent``); plain: PLAINTEXT."""
        return self.credentials.client(user) if self.secure else PLAINTEXT

    @property
    def pid_file(self) -> Path:
        """File holding the broker's process id while it runs."""
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        """Where the broker's own logs (``server.log``, ``broker.out``) go."""
        return self.data_dir / "logs"

    def start(self, timeout: float = 90) -> None:
        """Start the broker and wait until it serves metadata; no-op if already up."""
        deadline = time.monotonic() + timeout
        pid = self._live_pid()
        if pid is not None:
            if _port_open(self.port):
                log.info("kafka already running pid=%d bootstrap=%s", pid, self.bootstrap)
                return
            log.info("kafka already starting pid=%d bootstrap=%s", pid, self.bootstrap)
            self._wait_ready(pid, deadline, timeout)
            return
        self.pid_file.unlink(missing_ok=True)
        for name, port in (("port", self.port), ("controller port", self.controller_port)):
            if not port_free(port):
                raise BrokerError(f"{name} {port} is already in use by another process; stop "
                                  "it or choose another port with --port")
        java = shutil.which(self.java)
        if java is None:
            raise BrokerError(f"java executable '{self.java}' not found on PATH; install a "
                              "JDK 17 or newer to run the local Kafka broker")
        libs = self.libs_dir if self.libs_dir is not None else fetch_jars()
        if not any(libs.glob("*.jar")):
            raise BrokerError(f"no Kafka jars in '{libs}'; run 'trainguard kafka fetch' first")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self._check_secure_storage()
        props = self._write_properties()
        base = [java, "-cp", str(libs / "*"),
                f"-Dlog4j2.configurationFile={kafka_home() / 'log4j2.yaml'}",
                f"-Dkafka.logs.dir={self.log_dir}", "-Djava.awt.headless=true"]
        self._format_storage(base, props)
        cmd = [base[0], f"-Xmx{self.heap}", "-XX:+UseG1GC", *base[1:], "kafka.Kafka", str(props)]
        with open(self.log_dir / "broker.out", "ab") as out:
            out.write(f"=== trainguard start {datetime.now(UTC).isoformat()}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n", encoding="utf-8")
        log.info("kafka starting pid=%d bootstrap=%s data_dir=%s",
                 self._proc.pid, self.bootstrap, self.data_dir)
        self._wait_ready(self._proc.pid, deadline, timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); no-op if not running."""
        pid = self._live_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            log.debug("kafka not running data_dir=%s", self.data_dir)
            return
        log.info("kafka stopping pid=%d", pid)
        _signal_group(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            log.warning("kafka did not stop in time; killing pid=%d timeout=%gs", pid, timeout)
            _signal_group(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise BrokerError(f"kafka process {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        log.info("kafka stopped pid=%d", pid)

    def status(self) -> BrokerStatus:
        """Report whether the broker process is alive and its port accepts connections."""
        pid = self._live_pid()
        running = pid is not None and _port_open(self.port)
        return BrokerStatus(running=running, pid=pid, bootstrap=self.bootstrap,
                            data_dir=self.data_dir)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the broker's stderr and ``server.log``, for error reports."""
        parts = []
        for name in ("broker.out", "server.log"):
            path = self.log_dir / name
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                    tail = _last_lines(f.read().decode(errors="replace"), lines)
                parts.append(f"--- {path} ---\n{tail}")
        return "\n".join(parts) or f"(no broker logs in '{self.log_dir}')"

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_properties(self) -> Path:
        """Write ``server.properties`` for the current ports; rewritten on every start."""
        path = self.data_dir / "server.properties"
        c = self.controller_port
        listeners = secure_listener_properties(self.credentials, self.port, c) \
            if self.secure else [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{c}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        path.touch(mode=0o600)  # secure mode: it holds the admin and keystore passwords
        os.chmod(path, 0o600)
        path.write_text("\n".join([
            "# Written by trainguard.local.broker.LocalBroker on every start; edits are lost.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{c}",
            *listeners,
            f"log.dirs={self.data_dir / 'kafka-logs'}",
            "num.partitions=1",
            # One node: nothing to replicate, and a small offsets topic starts groups faster.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            f"log.cleaner.dedupe.buffer.size={self._dedupe_bytes}",
            "",
        ]), encoding="utf-8")
        return path

    def _format_storage(self, base_cmd: list[str], props: Path) -> None:
        """Format the log dir with a cluster id kept in ``cluster.id``, once per data dir."""
        if (self.data_dir / "kafka-logs" / "meta.properties").is_file():
            return
        id_file = self.data_dir / "cluster.id"
        if id_file.is_file():
            cluster_id = id_file.read_text(encoding="utf-8").strip()
        else:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            id_file.write_text(cluster_id + "\n", encoding="utf-8")
        cmd = [base_cmd[0], "-Xmx256m", *base_cmd[1:], "kafka.tools.StorageTool", "format",
               # "=" form: a urlsafe id may start with "-", which argparse reads as a flag.
               f"--cluster-id={cluster_id}", "-c", str(props),
               # SCRAM users exist from the start: the broker logs in to itself as admin.
               *(scram_format_args(self.credentials) if self.secure else [])]
        try:
            proc = subprocess.run(cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=_FORMAT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage in '{self.data_dir}' took over "
                              f"{_FORMAT_TIMEOUT_S:g}s") from exc
        if proc.returncode != 0:
            raise BrokerError(f"formatting Kafka storage in '{self.data_dir}' failed "
                              f"(exit {proc.returncode}):\n{_last_lines(proc.stdout)}")
        if self.secure:
            (self.data_dir / _SCRAM_MARKER).write_text("\n", encoding="utf-8")
        log.info("kafka storage formatted cluster_id=%s data_dir=%s secure=%s", cluster_id,
                 self.data_dir, self.secure)

    def _check_secure_storage(self) -> None:
        """Refuse storage formatted in plain mode, or whose passwords were lost: no SCRAM."""
        formatted = (self.data_dir / "kafka-logs" / "meta.properties").is_file()
        if not formatted:
            return
        creds = LocalCredentials(self.data_dir / "security")
        if not (self.data_dir / _SCRAM_MARKER).is_file() or not creds.complete():
            raise BrokerError(f"the Kafka storage in '{self.data_dir}' was formatted without "
                              "this secure mode's SCRAM users (plain mode, or its security/ "
                              "files are gone); use a fresh data directory")

    def _wait_ready(self, pid: int, deadline: float, timeout: float) -> None:
        """Poll until the broker answers a metadata request, it dies, or time runs out."""
        started = time.monotonic()
        last = "no attempt yet"
        while True:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                code = self._proc.returncode if self._proc is not None else None
                raise BrokerError(f"kafka process {pid} exited (code {code}) before it was "
                                  f"ready on port {self.port}:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = self.log_tail()
                self.stop()
                raise BrokerError(f"kafka on port {self.port} not ready within {timeout:g}s "
                                  f"({last}); stopped it:\n{tail}")
            try:
                wait_for_broker(self.bootstrap, timeout=min(2.0, remaining),
                                security=self.client_security())
            except BrokerError as exc:
                last = str(exc)
                continue
            log.info("kafka ready pid=%d bootstrap=%s seconds=%.1f",
                     pid, self.bootstrap, time.monotonic() - started)
            return

    def _live_pid(self) -> int | None:
        """Return the pid in the pid file if that process is alive and is a Kafka broker."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        if not self._alive(pid):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        # Guards against a stale pid file whose pid was reused by another program.
        if cmdline.exists() and b"kafka.Kafka" not in cmdline.read_bytes():
            return None
        return pid

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie is dead for our purposes
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the broker's process group (it leads its own session), else just the pid."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(port: int) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Tell whether 127.0.0.1:``port`` can be bound (SO_REUSEADDR skips TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _last_lines(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
