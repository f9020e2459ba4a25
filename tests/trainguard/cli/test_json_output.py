"""``--json`` on every command that prints data: one JSON document on stdout, nothing else.

The commands run in this process through :func:`trainguard.cli.main`; the store is a fake
that answers the statements the commands send (chdb binds a process to one directory, so
a real embedded store is for the integration tests), and Grafana is the loopback fake.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainguard.grafana.fake_grafana import TOKEN, FakeGrafana
from trainguard import envvars
from trainguard.cli import main
from trainguard.cli._common import print_json
from trainguard.cli.eval import scorecard_doc
from trainguard.evaluation.run import EvalReport
from trainguard.evaluation.scorecard import RunResult
from trainguard.grafana.push import DATASOURCE_TYPE, DATASOURCE_UID
from trainguard.pipeline.alerts.config import Silence
from trainguard.pipeline.store.base import QueryResult

SERVER = "http://reader@127.0.0.1:1/trainguard"


class FakeStore:
    """Answers ``row_counts``' and ``require_table``'s statements, and one canned query."""

    database = "trainguard"

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __enter__(self) -> FakeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def query(self, sql: str) -> QueryResult:
        self.statements.append(sql)
        if "system.tables" in sql:
            return QueryResult(["name", "engine"],
                               [("alerts", "MergeTree"), ("steps", "ReplacingMergeTree")])
        if sql.startswith("EXISTS TABLE"):
            return QueryResult(["result"], [(1,)])
        if sql.startswith("SELECT count() FROM {database}.steps FINAL"):
            return QueryResult(["count()"], [(7,)])
        if sql.startswith("SELECT count() FROM {database}.steps"):
            return QueryResult(["count()"], [(9,)])
        if sql.startswith("SELECT count() FROM {database}.alerts"):
            return QueryResult(["count()"], [(2,)])
        return QueryResult(["job_id", "n", "ranks"], [("job-7", 3, [0, 5]), ("job-8", 1, [])])


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    monkeypatch.delenv(envvars.CLICKHOUSE_PASSWORD, raising=False)
    monkeypatch.setattr("trainguard.pipeline.store.open_store", lambda url, **kw: fake)
    return fake


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    assert main(list(argv)) == code
    return json.loads(capsys.readouterr().out)


def test_print_json_writes_dataclasses_paths_and_tuples_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @dataclass
    class Item:
        path: Path
        tags: tuple[str, ...]
        ratio: float

    print_json({"items": [Item(Path("/var/lib/tg"), ("a", "b"), float("nan"))]})

    assert json.loads(capsys.readouterr().out) == {
        "items": [{"path": "/var/lib/tg", "tags": ["a", "b"], "ratio": None}]}


def test_db_counts_json_gives_rows_per_table(
    store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = run_json(capsys, "db", "counts", "--store", SERVER, "--json")
    assert doc == {"store": "http://reader@127.0.0.1:1/trainguard", "final": True,
                   "tables": {"alerts": 2, "steps": 7}}

    raw = run_json(capsys, "db", "counts", "--store", SERVER, "--raw", "--json")
    assert raw["final"] is False and raw["tables"]["steps"] == 9


def test_db_query_json_gives_columns_and_rows_with_their_types(
    store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = run_json(capsys, "db", "query", "--store", SERVER, "--json",
                   "SELECT job_id, count() AS n, groupUniqArray(rank) AS ranks FROM x")
    assert doc == {"columns": ["job_id", "n", "ranks"],
                   "rows": [["job-7", 3, [0, 5]], ["job-8", 1, []]]}


def test_db_query_json_still_refuses_writes_before_opening_the_store(
    store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "query", "--store", SERVER, "--json", "DROP TABLE x"]) == 1
    assert capsys.readouterr().out == "" and store.statements == []


def test_silence_list_json_gives_each_silence_with_its_state(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    silences = [
        Silence(silence_id="s-1", job_id="job-7", node=None, starts_at=now - 60,
                ends_at=now + 3600, reason="MAINT-1", created_by="alice"),
        Silence(silence_id="s-2", job_id=None, node="node-3", starts_at=now + 600,
                ends_at=now + 7200, reason="MAINT-2", created_by="bob", integrity=True),
    ]
    monkeypatch.setattr("trainguard.pipeline.alerts.silences.list_silences",
                        lambda store, now, include_expired=False: silences)

    doc = run_json(capsys, "silence", "list", "--store", SERVER, "--json")

    first, second = doc["silences"]
    assert first["silence_id"] == "s-1" and first["state"] == "active"
    assert first["job_id"] == "job-7" and first["node"] is None
    assert first["starts_at"] == pytest.approx(now - 60) and first["created_by"] == "alice"
    assert second["state"] == "planned" and second["integrity"] is True


def test_silence_list_json_with_none_is_an_empty_list(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("trainguard.pipeline.alerts.silences.list_silences",
                        lambda store, now, include_expired=False: [])
    assert run_json(capsys, "silence", "list", "--store", SERVER, "--json") == {"silences": []}


# -- kafka status ---------------------------------------------------------------------------


def test_kafka_status_json_says_stopped_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = run_json(capsys, "kafka", "status", "--data-dir", str(tmp_path), "--port", "19999",
                   "--json", code=1)
    assert doc == {"state": "stopped", "running": False, "pid": None,
                   "bootstrap": "127.0.0.1:19999", "data_dir": str(tmp_path.resolve())}


@pytest.fixture
def fake_broker(tmp_path: Path) -> Iterator[tuple[int, socket.socket]]:
    """A live process whose command line names kafka.Kafka, and a port that accepts."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "kafka.Kafka"])
    listener = socket.create_server(("127.0.0.1", 0))
    (tmp_path / "broker.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc.pid, listener
    finally:
        listener.close()
        proc.kill()
        proc.wait()


def test_kafka_status_json_says_running_with_pid_and_bootstrap(
    tmp_path: Path, fake_broker: tuple[int, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pid, listener = fake_broker
    port = listener.getsockname()[1]
    doc = run_json(capsys, "kafka", "status", "--data-dir", str(tmp_path), "--port", str(port),
                   "--json")
    assert doc["state"] == "running" and doc["running"] is True and doc["pid"] == pid
    assert doc["bootstrap"] == f"127.0.0.1:{port}"


def test_kafka_status_json_says_starting_while_the_port_is_closed(
    tmp_path: Path, fake_broker: tuple[int, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pid, listener = fake_broker
    closed = listener.getsockname()[1]
    listener.close()
    doc = run_json(capsys, "kafka", "status", "--data-dir", str(tmp_path), "--port",
                   str(closed), "--json", code=1)
    assert doc["state"] == "starting" and doc["running"] is False and doc["pid"] == pid


# -- grafana push ---------------------------------------------------------------------------


def _dashboard(uid: str, title: str) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["trainguard"], "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s",
        "panels": [{
            "id": 1, "type": "timeseries", "title": "GPU utilization",
            "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "targets": [{"refId": "A", "format": 0,
                         "rawSql": "SELECT ts, avg(util) FROM gpu WHERE $__timeFilter(ts)"}],
        }],
    }


def test_grafana_push_dry_run_json_lists_what_would_change_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tg-fleet.json").write_text(json.dumps(_dashboard("tg-fleet", "fleet")))
    with FakeGrafana() as grafana:
        url = grafana.url
        doc = run_json(capsys, "grafana", "push", "--url", url, "--token", TOKEN,
                       "--dashboards", str(tmp_path), "--dry-run", "--json")
        assert grafana.writes == []

    assert doc["dry_run"] is True and doc["url"].rstrip("/") == url.rstrip("/")
    assert doc["counts"] == {"created": 3, "updated": 0, "unchanged": 0}
    assert {(i["kind"], i["uid"], i["action"]) for i in doc["items"]} >= {
        ("dashboard", "tg-fleet", "created")}
    assert TOKEN not in json.dumps(doc)


# -- eval -----------------------------------------------------------------------------------


def _result(scenario: str, seed: int, ttd: float | None, false: tuple[str, ...] = ()
            ) -> RunResult:
    return RunResult(scenario=scenario, kind="sabotage", seed=seed, detected=ttd is not None,
                     checks_fired=("param_divergence",) if ttd is not None else (),
                     blamed=("param_divergence(rank 5)",) if ttd is not None else (),
                     ttd_s=ttd, false_alerts=false, hardware=(), severity="hard")


REPORT = EvalReport(
    results=[_result("bitflip", 0, 4.0), _result("bitflip", 1, 8.0),
             _result("lr_spike", 0, None, ("straggler(node-2)",))],
    table="| scenario | ... |", wall_latency_s=[0.5, 1.5, 2.0], produced=1200, seconds=42.0)


def test_scorecard_doc_gives_verdicts_per_scenario_and_run() -> None:
    doc = scorecard_doc(REPORT)

    assert doc["passed"] is False and doc["produced"] == 1200
    assert doc["wall_latency_s"] == {"p50": 1.5, "max": 2.0, "detections": 3}
    bitflip, lr_spike = doc["scenarios"]
    assert bitflip == {
        "scenario": "bitflip", "kind": "sabotage", "severity": "hard", "passed": True,
        "runs": 2, "detected": 2, "checks": ["param_divergence"], "false_alerts": 0,
        "hardware": [], "ttd_median_s": 6.0, "ttd_max_s": 8.0}
    assert lr_spike["passed"] is False and lr_spike["ttd_median_s"] is None
    assert lr_spike["false_alerts"] == 1
    assert [r["seed"] for r in doc["runs"]] == [0, 1, 0]


def test_eval_json_prints_only_the_scorecard_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run_eval(opts: Any, out: Any = print) -> EvalReport:
        out("[eval] 3 jobs, progress line")
        return REPORT

    monkeypatch.setattr("trainguard.evaluation.run_eval", fake_run_eval)
    assert main(["eval", "--data-dir", str(tmp_path), "--json"]) == 1  # lr_spike failed

    captured = capsys.readouterr()
    assert json.loads(captured.out)["scenarios"][0]["scenario"] == "bitflip"
    assert "[eval] 3 jobs, progress line" in captured.err
