"""One stream worker process on this machine: start it, wait for its store, stop it.

Shared by ``trainguard demo`` and ``trainguard eval``, which both run the real worker as a
child process next to a local broker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from trainguard.errors import TrainguardError
from trainguard.pipeline.store import Store, StoreUrl, open_store, owner_reader

__all__ = ["check_alive", "start_worker", "stop_worker", "wait_for_store"]


def start_worker(
    bootstrap: str, store: str, prefix: str, data_dir: Path, log_path: Path,
    config: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``trainguard worker`` (with the TOML ``config``) logging to ``log_path``."""
    cmd = [
        sys.executable,
        "-m",
        "trainguard.cli",
        "--log-level",
        "INFO",
        "worker",
        "--bootstrap",
        bootstrap,
        "--store",
        store,
        "--topic-prefix",
        prefix,
        "--data-dir",
        str(data_dir / "worker"),
        "--batch-within",
        "0.2",
        *(["--config", str(config)] if config is not None else []),
    ]
    with open(log_path, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def check_alive(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """Raise with the log's tail if the worker exited."""
    if worker.poll() is not None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise TrainguardError(f"the stream worker exited with {worker.returncode}:\n{tail}")


def wait_for_store(url: StoreUrl, worker: subprocess.Popen[bytes], log_path: Path) -> Store:
    """Wait until the worker migrated the store and (embedded) serves reads."""
    deadline = time.monotonic() + 90
    last: Exception | None = None
    while time.monotonic() < deadline:
        check_alive(worker, log_path)
        try:
            # Embedded: only the worker we started counts as the owner (a killed earlier
            # run may have left its owner.json), and we never open the directory ourselves.
            store = owner_reader(url, pid=worker.pid) if url.embedded else open_store(url)
            if store is not None:
                store.query("SELECT count() FROM {database}.sample_batches")
                return store
        except TrainguardError as exc:
            last = exc
        time.sleep(0.5)
    raise TrainguardError(f"the stream worker did not open the store within 90s: {last}")


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
