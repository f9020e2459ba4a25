"""``trainguard alerts`` and ``trainguard silence``, against real embedded stores.

chdb binds a process to one directory for its lifetime, and the store tests under
tests/pipeline hold theirs, so every command that opens a store runs in a subprocess on
its own directory here. Argument errors are raised before any store is opened, so those
tests call :func:`trainguard.cli.main` in this process.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trainguard.cli import main
from trainguard.schemas.records import Alert

pytestmark = pytest.mark.integration

NOW = time.time()
#: $USER and $LOGNAME name someone else: who adds a silence is the process's real user.
_ENV = {**os.environ, "TRAINGUARD_LOG_LEVEL": "WARNING", "USER": "mallory", "LOGNAME": "mallory"}
ME = pwd.getpwuid(os.getuid()).pw_name

_SEED = """
import sys
from pathlib import Path
import msgspec
from trainguard.pipeline.sinks.rows import rows_for
from trainguard.pipeline.store import ChdbStore, migrate
from trainguard.schemas.records import Alert
alerts = msgspec.json.decode(sys.stdin.buffer.read(), type=list[Alert])
with ChdbStore(Path(sys.argv[1]), "trainguard") as store:
    migrate(store)
    for alert in alerts:
        store.insert_rows("alerts", [row for _, row in rows_for(alert)])
"""

_OWNER = """
import sys
from pathlib import Path
from trainguard.pipeline.store import ChdbStore, migrate, serve_reads
with ChdbStore(Path(sys.argv[1]), "trainguard") as store:
    migrate(store)
    with serve_reads(store, Path(sys.argv[1])):
        print("ready", flush=True)
        sys.stdin.read()
"""


def alert(fingerprint: str, start: float, **kw: Any) -> Alert:
    fields: dict[str, Any] = dict(
        alert_id=f"{fingerprint}-{round(start * 1000)}", fingerprint=fingerprint,
        status="firing", severity="page", check="param_divergence",
        summary="rank 5 on node-03: param checksum differs from its replicas'",
        cluster="c1", ts=start, starts_at=start, job_id="job-7", node="node-03", rank=5,
        evidence={"last_seen": start + 60.0}, labels={"severity": "page"},
    )
    fields.update(kw)
    return Alert(**fields)


PAGE = alert("fp-page", NOW - 600)
TICKET = alert("fp-ticket", NOW - 900, severity="ticket", check="straggler", job_id=None,
               node="node-09", rank=None, summary="node-09 is 40% slower than its peers")
GONE = alert("fp-gone", NOW - 3600, check="gpu_throttled", summary="GPU 2 throttled")
GONE_RESOLVED = msgspec.structs.replace(GONE, status="resolved", ts=NOW - 3000, ends_at=NOW - 3000)
STALE = alert("fp-stale", NOW - 3 * 86400, check="stale_check", summary="days ago")


def cli(store_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``trainguard ARGV --store chdb://STORE_DIR`` in its own process."""
    cmd = [sys.executable, "-m", "trainguard.cli", *argv, "--store", f"chdb://{store_dir}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_ENV)


def seed(store_dir: Path, *alerts: Alert) -> None:
    """Migrate the store at ``store_dir`` and insert ``alerts``, in another process."""
    subprocess.run([sys.executable, "-c", _SEED, str(store_dir)], env=_ENV, check=True,
                   input=msgspec.json.encode(list(alerts)), capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def alerts_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two open alerts, one resolved, and one that changed days ago."""
    store_dir = tmp_path_factory.mktemp("alerts-store")
    seed(store_dir, PAGE, TICKET, GONE, GONE_RESOLVED, STALE)
    return store_dir


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    seed(tmp_path / "store")
    return tmp_path / "store"


def test_alerts_lists_open_alerts_pages_first(alerts_store: Path) -> None:
    done = cli(alerts_store, "alerts")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "open alerts (2), changed in the last 24h:"
    assert lines[1].split()[:3] == ["severity", "check", "job"]
    assert lines[2].split()[:5] == ["page", "param_divergence", "job-7", "node-03", "5"]
    assert lines[2].endswith(PAGE.alert_id)
    assert lines[3].split()[:4] == ["ticket", "straggler", "-", "node-09"]
    assert GONE.alert_id not in done.stdout and "stale_check" not in done.stdout


def test_alerts_all_adds_the_recently_resolved(alerts_store: Path) -> None:
    done = cli(alerts_store, "alerts", "--all")
    assert done.returncode == 0, done.stderr
    _, resolved_part = done.stdout.split("resolved in the last 24h (1, newest first):\n")
    assert GONE.alert_id in resolved_part and PAGE.alert_id not in resolved_part


def test_alerts_json_carries_whole_alerts(alerts_store: Path) -> None:
    done = cli(alerts_store, "alerts", "--json", "--since", "2h")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [a["alert_id"] for a in doc["open"]] == [PAGE.alert_id, TICKET.alert_id]
    assert doc["open"][0]["evidence"] == PAGE.evidence and "resolved" not in doc
    both = json.loads(cli(alerts_store, "alerts", "--json", "--all").stdout)
    assert [a["status"] for a in both["resolved"]] == ["resolved"]


def test_alerts_on_an_empty_store_says_so(empty_store: Path) -> None:
    done = cli(empty_store, "alerts", "--all", "--since", "30m")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "no open alerts (no alert fired in the last 30m and is still firing)",
        "",
        "no alerts resolved in the last 30m",
    ]


def test_silences_are_added_listed_and_expired(empty_store: Path) -> None:
    added = cli(empty_store, "silence", "add", "--job", "job-7", "--duration", "2h",
                "--reason", "OPS-42 driver upgrade")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added sil-") and "job=job-7 node=any" in added.stdout
    first = added.stdout.split()[1].rstrip(":")
    planned = cli(empty_store, "silence", "add", "--node", "node-03", "--reason", "reboot",
                  "--start", "2999-01-01T00:00Z", "--until", "2999-01-01T02:00+00:00")
    assert planned.returncode == 0, planned.stderr
    second = planned.stdout.split()[1].rstrip(":")

    listed = cli(empty_store, "silence", "list").stdout.splitlines()
    assert [line.split()[:4] for line in listed[1:]] == [
        [first, "active", "job-7", "any"], [second, "planned", "any", "node-03"],
    ]
    assert f"by {ME})" in added.stdout and "mallory" not in "".join(listed)
    assert [line.split()[9:11] for line in listed[1:]] == [[ME, "no"], [ME, "no"]]
    expired = cli(empty_store, "silence", "expire", first)
    assert expired.returncode == 0 and expired.stdout.startswith(f"expired {first} ")
    assert first not in cli(empty_store, "silence", "list").stdout
    everything = cli(empty_store, "silence", "list", "--all").stdout
    assert f"{first}  expired" in everything and second in everything
    again = cli(empty_store, "silence", "expire", first)
    assert again.returncode == 2 and "already over" in again.stderr


def test_a_silence_of_one_check_on_one_node_is_added_and_listed_with_its_matchers(
        empty_store: Path) -> None:
    added = cli(empty_store, "silence", "add", "--check", "gpu_throttled", "node=node-07",
                "rank!=0", "--duration", "2h", "--reason", "fan swap OPS-7")
    assert added.returncode == 0, added.stderr
    assert ": node=node-07 check=gpu_throttled rank!=0 from" in added.stdout
    [header, row] = cli(empty_store, "silence", "list").stdout.splitlines()
    assert header.split()[4] == "matchers"
    assert row.split()[2:7] == ["any", "any", "node=node-07", "check=gpu_throttled", "rank!=0"]
    listed = json.loads(cli(empty_store, "silence", "list", "--json").stdout)
    [silence] = listed["silences"]
    assert silence["matchers"] == ["node=node-07", "check=gpu_throttled", "rank!=0"]


def test_an_integrity_silence_is_added_only_within_the_limit(empty_store: Path) -> None:
    added = cli(empty_store, "silence", "add", "--job", "job-7", "--duration", "4h",
                "--integrity", "--reason", "OPS-43 new checkpoint writer")
    assert added.returncode == 0, added.stderr
    assert "including integrity findings" in added.stdout
    sid = added.stdout.split()[1].rstrip(":")
    too_long = cli(empty_store, "silence", "add", "--job", "job-7", "--duration", "25h",
                   "--integrity", "--reason", "OPS-44")
    assert too_long.returncode == 2 and "integrity silence rule" in too_long.stderr
    [header, row] = cli(empty_store, "silence", "list", "--all").stdout.splitlines()
    assert row.split()[:1] + row.split()[9:11] == [sid, ME, "yes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["silence", "add", "--job", "j", "--duration", "2x", "--reason", "r"],
         "--duration '2x' is not a duration; expected a number > 0 and a unit s, m, h or d"),
        (["silence", "add", "--job", "j", "--duration", "0m", "--reason", "r"],
         "--duration '0m' is not a duration"),
        (["silence", "add", "--job", "j", "--duration", "h", "--reason", "r"],
         "--duration 'h' is not a duration"),
        (["silence", "add", "--job", "j", "--until", "2030-01-01T00:00", "--reason", "r"],
         "--until '2030-01-01T00:00' has no timezone"),
        (["silence", "add", "--job", "j", "--until", "tomorrow", "--reason", "r"],
         "--until 'tomorrow' is not an ISO 8601 time"),
        (["silence", "add", "--duration", "1h", "--reason", "r"],
         "silence add needs --job, --node or --check"),
        (["silence", "add", "--check", "gpu_throtled", "--duration", "1h", "--reason", "r"],
         "unknown check 'gpu_throtled'; expected one of: agent_silent, "),
        (["silence", "add", "check=~gpu_(", "--node", "n", "--duration", "1h", "--reason", "r"],
         'matcher check=~"gpu_(": bad regular expression'),
        (["silence", "add", "host=node-07", "--duration", "1h", "--reason", "r"],
         "unknown matcher name 'host'; expected one of: check, job_id, node"),
        (["silence", "add", "node:node-07", "--duration", "1h", "--reason", "r"],
         "bad matcher 'node:node-07'; expected NAME=VALUE"),
        (["silence", "add", "check!=straggler", "--duration", "1h", "--reason", "r"],
         "silence add needs --job, --node or --check"),
        (["alerts", "--since", "1w"], "--since '1w' is not a duration"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_the_store_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    store_dir = tmp_path / "never-opened"
    assert main([*argv, "--store", f"chdb://{store_dir}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not store_dir.exists()


@pytest.fixture
def owned_store(tmp_path: Path) -> Iterator[Path]:
    """A store owned by another process that serves reads, as a running worker does."""
    store_dir = tmp_path / "owned"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(store_dir)], env=_ENV,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "ready\n"
        yield store_dir
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(timeout=60)


def test_silences_go_through_the_worker_that_owns_the_embedded_store(
    owned_store: Path,
) -> None:
    listed = cli(owned_store, "silence", "list")
    assert (listed.returncode, listed.stdout) == (0, "no active or planned silences\n")
    added = cli(owned_store, "silence", "add", "--node", "node-03", "--duration", "1h",
                "--reason", "reboot")
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[1].rstrip(":")
    listed = cli(owned_store, "silence", "list")
    assert sid in listed.stdout and "node-03" in listed.stdout
    expired = cli(owned_store, "silence", "expire", sid)
    assert expired.returncode == 0, expired.stderr
    assert sid not in cli(owned_store, "silence", "list").stdout
