"""A local Prometheus Alertmanager process, configured with trainguard's shipped routes.

The binary comes from the Debian package ``prometheus-alertmanager`` (0.25; ``make
alertmanager`` installs it). :class:`LocalAlertmanager` renders
``infra/alertmanager/alertmanager.yml`` with real receiver URLs into its data directory
and runs Alertmanager on ``127.0.0.1:<free port>`` with HA gossip off, for tests, the
demo and benchmarks. It can be stopped and started again on the same port; note that
Alertmanager keeps active alerts in memory only (silences and the notification log
survive a restart, alerts do not), so senders must re-send, as trainguard does.

>>> from trainguard.local.webhook_server import RecordingWebhookServer
>>> with RecordingWebhookServer() as rx:  # doctest: +SKIP
...     with LocalAlertmanager(rx.url_for("/pager")) as am:
...         ...  # POST alerts to am.alerts_url; rx.wait_for_notification() sees it
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from trainguard.errors import ConfigError, TrainguardError
from trainguard.local.broker import free_port
from trainguard.resources import infra_candidates

__all__ = [
    "DEBIAN_PACKAGE",
    "PAGER_PLACEHOLDER",
    "TICKETS_PLACEHOLDER",
    "AlertmanagerError",
    "AlertmanagerNotFoundError",
    "LocalAlertmanager",
    "check_config",
    "config_template",
    "find_alertmanager",
    "find_amtool",
    "render_config",
]

log = logging.getLogger(__name__)

#: The Debian package that ships both ``prometheus-alertmanager`` and ``amtool``.
DEBIAN_PACKAGE = "prometheus-alertmanager"
#: Receiver URLs in the shipped file, replaced by :func:`render_config`.
PAGER_PLACEHOLDER = "http://trainguard-pager.invalid/alertmanager"
TICKETS_PLACEHOLDER = "http://trainguard-tickets.invalid/alertmanager"

_INSTALL_HINT = (
    f"install the Debian package '{DEBIAN_PACKAGE}' (0.25), e.g. with 'make alertmanager' "
    f"or 'apt-get install --no-install-recommends {DEBIAN_PACKAGE}'"
)
_READY_POLL_S = 0.05
_TAIL_BYTES = 65536
# Loopback only: never route the readiness probe through an http_proxy from the environment.
_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Characters that would break out of the single-quoted YAML scalar the URL goes into.
_UNSAFE_URL_RE = re.compile(r"[\s'\"\\]")


class AlertmanagerError(TrainguardError):
    """The local Alertmanager could not be found, configured, started or stopped."""


class AlertmanagerNotFoundError(AlertmanagerError, ConfigError):
    """The ``prometheus-alertmanager`` (or ``amtool``) executable is not installed."""


def _find_executable(names: tuple[str, ...], explicit: str | Path | None, what: str) -> Path:
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
        raise AlertmanagerNotFoundError(f"{what} '{explicit}' is not an executable file; "
                                        + _INSTALL_HINT)
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
        fixed = Path("/usr/bin") / name  # PATH may be trimmed (sudo, systemd units)
        if fixed.is_file() and os.access(fixed, os.X_OK):
            return fixed
    raise AlertmanagerNotFoundError(
        f"{what} not found (looked for {', '.join(repr(n) for n in names)} on PATH and in "
        f"/usr/bin); {_INSTALL_HINT}"
    )


def find_alertmanager(binary: str | Path | None = None) -> Path:
    """Return the Alertmanager executable: ``binary`` if given, else the one on PATH.

    Debian names it ``prometheus-alertmanager``; upstream tarballs name it
    ``alertmanager``. Raises :class:`AlertmanagerNotFoundError` naming the package.
    """
    return _find_executable(("prometheus-alertmanager", "alertmanager"), binary,
                            "Alertmanager executable")


def find_amtool(binary: str | Path | None = None) -> Path:
    """Return the ``amtool`` executable (same Debian package as Alertmanager)."""
    return _find_executable(("amtool",), binary, "amtool executable")


def config_template() -> Path:
    """Return the shipped ``alertmanager.yml`` (source checkout or installed wheel)."""
    candidates = infra_candidates("alertmanager", "alertmanager.yml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AlertmanagerError("cannot find the shipped alertmanager.yml; looked in: "
                            + ", ".join(f"'{c}'" for c in candidates))


def _check_receiver_url(name: str, url: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} receiver URL {url!r}; expected an http:// or https:// URL")
    if _UNSAFE_URL_RE.search(url):
        raise ConfigError(f"{name} receiver URL {url!r} contains whitespace, quotes or "
                          "backslashes; expected a plain URL")


def render_config(pager_url: str, tickets_url: str | None = None, *,
                  template: Path | None = None) -> str:
    """Return the shipped configuration with its two receiver URLs filled in.

    ``pager_url`` receives ``severity="critical"`` alerts (trainguard's pages),
    ``tickets_url`` everything else (defaults to ``pager_url``). Routes and timings stay
    exactly as shipped.
    """
    tickets_url = pager_url if tickets_url is None else tickets_url
    _check_receiver_url("pager", pager_url)
    _check_receiver_url("tickets", tickets_url)
    path = template if template is not None else config_template()
    text = path.read_text(encoding="utf-8")
    for placeholder in (PAGER_PLACEHOLDER, TICKETS_PLACEHOLDER):
        if f"url: '{placeholder}'" not in text:
            raise AlertmanagerError(f"'{path}' has no receiver URL placeholder "
                                    f"'{placeholder}'; the template and render_config() "
                                    "disagree")
    text = text.replace(f"url: '{PAGER_PLACEHOLDER}'", f"url: '{pager_url}'")
    return text.replace(f"url: '{TICKETS_PLACEHOLDER}'", f"url: '{tickets_url}'")


def check_config(path: Path, *, amtool: str | Path | None = None,
                 timeout_s: float = 30.0) -> str:
    """Validate an Alertmanager configuration file with ``amtool check-config``.

    Returns amtool's report; raises :class:`AlertmanagerError` with it if the file is
    invalid, and :class:`AlertmanagerNotFoundError` if amtool is not installed.
    """
    tool = find_amtool(amtool)
    try:
        proc = subprocess.run([str(tool), "check-config", str(path)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AlertmanagerError(f"amtool check-config '{path}' took over {timeout_s:g}s") from exc
    report = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise AlertmanagerError(f"amtool check-config rejects '{path}' "
                                f"(exit {proc.returncode}):\n{report}")
    return report


class LocalAlertmanager:
    """One Alertmanager child process on ``127.0.0.1:<port>``, HA gossip off.

    Its files live in ``data_dir`` (a fresh temporary directory, removed on exit from
    the ``with`` block, when none is given): ``alertmanager.yml`` (rendered on every
    start), ``data/`` (``--storage.path``) and ``alertmanager.log`` (stdout and stderr,
    appended across restarts).
    """

    def __init__(
        self,
        pager_url: str,
        tickets_url: str | None = None,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        binary: str | Path | None = None,
        config_text: str | None = None,
        ready_timeout_s: float = 30.0,
        log_level: str = "info",
    ) -> None:
        if port is not None and (isinstance(port, bool) or not 1 <= port <= 65535):
            raise ConfigError(f"invalid Alertmanager port {port!r}; expected 1-65535")
        if log_level not in ("debug", "info", "warn", "error"):
            raise ConfigError(f"invalid Alertmanager log level {log_level!r}; expected one "
                              "of: debug, info, warn, error")
        if not ready_timeout_s > 0:
            raise ConfigError(f"invalid ready_timeout_s={ready_timeout_s!r}; expected > 0")
        self._config_text = (config_text if config_text is not None
                             else render_config(pager_url, tickets_url))
        self._binary = find_alertmanager(binary)
        self._port = port if port is not None else free_port()
        self._owns_dir = data_dir is None
        self.data_dir = (Path(tempfile.mkdtemp(prefix="trainguard-alertmanager-"))
                         if data_dir is None else Path(data_dir).expanduser().resolve())
        self._ready_timeout_s = ready_timeout_s
        self._log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The HTTP port, fixed for the life of this object (kept across restarts)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def alerts_url(self) -> str:
        """Where alerts are POSTed: ``<url>/api/v2/alerts``."""
        return f"{self.url}/api/v2/alerts"

    @property
    def config_path(self) -> Path:
        """The rendered configuration file."""
        return self.data_dir / "alertmanager.yml"

    @property
    def log_path(self) -> Path:
        """Alertmanager's stdout and stderr, appended across restarts."""
        return self.data_dir / "alertmanager.log"

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        return [
            str(self._binary),
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self._port}",
            # Empty disables HA gossip: no :9094 listener and no wait for peers to
            # settle before the first notification goes out.
            "--cluster.listen-address=",
            f"--log.level={self._log_level}",
        ]

    def start(self) -> None:
        """Start Alertmanager and wait for ``GET /-/ready`` to answer 200; no-op if running."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self._config_text, encoding="utf-8")
        cmd = self.command()
        started = time.monotonic()
        with open(self.log_path, "ab") as out:
            out.write(f"=== trainguard start {datetime.now(UTC).isoformat()}\n".encode())
            out.flush()
            try:
                self._proc = subprocess.Popen(cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)
            except OSError as exc:
                raise AlertmanagerError(f"cannot run '{self._binary}': {exc}") from exc
        log.info("alertmanager starting pid=%d url=%s data_dir=%s",
                 self._proc.pid, self.url, self.data_dir)
        self._wait_ready(started)
        log.info("alertmanager ready pid=%d url=%s seconds=%.2f",
                 self._proc.pid, self.url, time.monotonic() - started)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``timeout``); no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("alertmanager did not stop in time; killing pid=%d timeout=%gs",
                        proc.pid, timeout)
            proc.kill()
            proc.wait(timeout=10)
        log.info("alertmanager stopped pid=%d", proc.pid)

    def close(self) -> None:
        """Stop, and remove ``data_dir`` if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` of Alertmanager's log, for error reports."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return f"(no log at '{self.log_path}')"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalAlertmanager:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wait_ready(self, started: float) -> None:
        """Poll ``/-/ready`` until 200; on death or timeout stop it and raise with the log."""
        assert self._proc is not None
        deadline = started + self._ready_timeout_s
        last = "no attempt yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise AlertmanagerError(
                    f"alertmanager exited (code {code}) before it was ready on port "
                    f"{self._port}; log '{self.log_path}':\n{self.log_tail()}"
                )
            try:
                with _LOCAL_OPENER.open(self.url + "/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.stop()
                raise AlertmanagerError(
                    f"alertmanager on port {self._port} not ready within "
                    f"{self._ready_timeout_s:g}s (last: {last}); stopped it. Log "
                    f"'{self.log_path}':\n{tail}"
                )
            time.sleep(_READY_POLL_S)
