"""Every dashboard query runs on a real embedded store and returns what its panel declares.

chdb binds a process to one directory for its lifetime, and the store tests under
tests/pipeline hold theirs (their fixtures are not visible here), so the store work runs in
one subprocess on its own directory: it migrates, writes a small synthetic hour of every
table the panels read (:func:`seed`), runs :func:`~trainguard.grafana.verify.verify` and
prints the checks as JSON. The judging logic itself is tested in this process against a
fake store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trainguard.cli import main
from trainguard.cli.grafana import parse_time
from trainguard.errors import ConfigError, StoreError
from trainguard.grafana.dashboards import UIDS, all_dashboards
from trainguard.grafana.model import Annotation, Dashboard, Panel, Variable
from trainguard.grafana.verify import PanelCheck, failures, verify
from trainguard.pipeline.store.base import QueryResult, Store

ROOT = Path(__file__).resolve().parents[3]
HOUR = 3600.0
_ENV = {**os.environ, "TRAINGUARD_LOG_LEVEL": "WARNING"}
BROKEN = Dashboard(uid="broken", title="broken", description="", panels=(
    Panel("Broken", "timeseries", sql="SELECT $__timeInterval(ts) AS time, no_such_column "
          "FROM {database}.gpu_samples WHERE $__timeFilter(ts) GROUP BY time"),
))
_VERIFY = """
import dataclasses, json, sys
from pathlib import Path
from trainguard.pipeline.store import ChdbStore, migrate
from tests.trainguard.grafana.test_verify import BROKEN, seed
from trainguard.grafana.dashboards import all_dashboards
from trainguard.grafana.verify import verify
with ChdbStore(Path(sys.argv[1]), "trainguard") as store:
    migrate(store)
    now = seed(store, float(sys.argv[2]))
    checks = verify(store, [*all_dashboards(), BROKEN], start=now - 3600, end=now, variables={})
print(json.dumps([dataclasses.asdict(c) for c in checks]))
"""
_PIPELINE_HEALTH = (
    "CREATE TABLE IF NOT EXISTS {database}.pipeline_health (ts DateTime64(3, 'UTC'), "
    "worker LowCardinality(String), metric LowCardinality(String), topic LowCardinality(String), "
    "partition Int32, value Float64) ENGINE = MergeTree ORDER BY (metric, worker, ts)"
)


def seed(store: Store, now: float) -> float:
    """Write an hour (ending at ``now``) of two nodes, one job of four ranks, and the rest."""
    # Created by migration 014 in current trees; kept for a tree that predates it.
    store.command(_PIPELINE_HEALTH)
    start = now - HOUR
    ticks = [start + 30 + 60 * i for i in range(60)]
    nodes = ("node-00", "node-01")
    base = {"cluster": "c1"}
    store.insert_rows("sample_batches", [
        {**base, "node": n, "job_id": "job-1", "ts": t, "seq": i, "agent_id": f"a-{n}",
         "gpu_count": 2, "lost_gpus": int(n == "node-01" and i > 50), "driver_version": "550",
         "schema_version": 1, "kafka_partition": 0, "kafka_offset": i}
        for i, t in enumerate(ticks) for n in nodes])
    store.insert_rows("gpu_samples", [
        {**base, "node": n, "job_id": "job-1", "gpu": g, "ts": t, "uuid": f"{n}-{g}",
         "model": "H100", "lost": False, "util_gpu_pct": 90.0 - 10 * g, "power_w": 600.0,
         "temp_c": 60.0 + i % 5, "clock_event_reasons": 0x28 if i == 10 else 0,
         "ecc_corrected": i // 20, "ecc_uncorrected": 0, "xids": [79] if i == 30 else [],
         "remap_pending": i == 40}
        for i, t in enumerate(ticks) for n in nodes for g in (0, 1)])
    steps = [start + 15 + 30 * i for i in range(120)]
    store.insert_rows("steps", [
        {**base, "job_id": "job-1", "step": s, "rank": r, "world_size": 4,
         "node": nodes[r // 2], "ts": t, "loss": 2.0 - s / 100, "grad_norm": 1.0, "lr": 3e-4,
         "step_time_s": 1.5 if r == 3 else 1.0, "tokens_per_s": 4096.0,
         "env_fingerprint": "code-b" if r == 3 and s > 60 else "code-a", "seed_fingerprint": "s1",
         "param_checksum": "bad" if r == 2 and s > 90 else f"p{s}", "dp_rank": r, "tp_rank": 0,
         "pp_rank": 0}
        for s, t in enumerate(steps) for r in range(4)])
    store.insert_rows("agent_heartbeats", [
        {**base, "node": n, "ts": t, "agent_id": f"a-{n}", "agent_version": "0.7",
         "backend": "simulated", "uptime_s": t - start, "gpu_count": 2, "batches_sent": i,
         "spool_depth": 3 if n == "node-00" and i > 100 else 0, "spool_dropped": i // 40,
         "datagrams_dropped": 0, "steps_dropped": 0, "send_errors": i // 60}
        for i, t in enumerate(steps) for n in nodes if n == "node-00" or t < now - 600])
    store.insert_rows("anomalies", [
        {**base, "entity_kind": "gpu", "entity": "node-01/0", "node": "node-01", "gpu": 0,
         "metric": "temp_c", "pattern": "spike", "first_seen": start + 900, "ts": start + 900,
         "value": 91.0, "baseline": 62.0, "scale": 2.0, "score": 14.5, "window": 60,
         "detector": "robust_z", "detector_version": "1"}])
    store.insert_rows("findings", [
        {**base, "job_id": "job-1", "check": check, "category": "integrity",
         "finding_id": f"f-{check}", "first_seen": start + first, "ts": start + first,
         "last_seen": start + first + 300, "cleared_at": cleared, "step": 40, "ranks": [3],
         "nodes": ["node-01"], "observed": "1.5", "expected": "1.0", "score": 5.0,
         "summary": f"{check} on rank 3", "evidence": "{}", "check_version": "1"}
        for check, first, cleared in (("straggler", 1200, None),
                                      ("code_fingerprint", 1800, start + 2400))])
    store.insert_rows("checkpoints", [
        {**base, "job_id": "job-1", "checkpoint_id": "ckpt-40", "rank": r, "action": action,
         "node": nodes[r // 2], "step": 40, "ts": start + (1300 if action == "save" else 1900),
         "digest": "d-bad" if action == "load" and r == 2 else "d-ok"}
        for r in range(4) for action in ("save", "load")])
    store.insert_rows("alerts", [
        {**base, "alert_id": f"{fp}-1", "fingerprint": fp, "status": status,
         "severity": severity, "check": "straggler", "summary": f"{fp} {status}",
         "ts": start + at, "starts_at": start + begun, "ends_at": ended, "job_id": "job-1",
         "node": "node-01", "rank": 3, "evidence": '{"ratio": 1.5}', "labels": {},
         "runbook_url": "", "dashboard_url": ""}
        for fp, status, severity, at, begun, ended in (
            ("fp-a", "firing", "page", 1300, 1300, None),
            ("fp-a", "resolved", "page", 2500, 1300, start + 2500),
            ("fp-b", "firing", "ticket", 3000, 3000, None))])
    store.insert_rows("alert_deliveries", [
        {"receiver": "alertmanager", "alert_id": "fp-a-1", "fingerprint": "fp-a",
         "status": status, "severity": "page", "outcome": outcome, "attempts": 1, "detail": "",
         "ts": start + at, "alert_ts": start + at}
        for status, outcome, at in (("firing", "delivered", 1301), ("resolved", "failed", 2501))])
    store.insert_rows("silences", [
        {"silence_id": "s-1", "job_id": "", "node": "node-01", "starts_at": start + 600,
         "ends_at": now + HOUR, "reason": "reboot", "created_by": "ops", "created_at": start}])
    store.insert_rows("dead_letters", [
        {"topic": "tg.samples", "partition": 0, "offset": o, "reason": "schema",
         "message": "bad field", "payload_head": "{", "payload_size": 10, "ts": start + 60 * o}
        for o in (5, 6)])
    health = [("ingest_msgs_per_s", "", -1, 120.0), ("records_per_s", "", -1, 500.0),
              ("dead_letters_total", "", -1, 2.0), ("sink_batch_ms", "", -1, 12.0),
              ("alerts_queued", "", -1, 0.0), ("deliveries_failed_total", "", -1, 1.0),
              ("consumer_lag", "tg.samples", 0, 4.0), ("consumer_lag", "tg.samples", 1, 0.0)]
    store.insert_rows("pipeline_health", [
        {"ts": t, "worker": "w1", "metric": m, "topic": topic, "partition": p, "value": v}
        for t in ticks for m, topic, p, v in health])
    return now


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, list[PanelCheck]]:
    """The seeded store's directory (closed again), the range end, and the checks."""
    store_dir = tmp_path_factory.mktemp("grafana-store")
    now = float(int(datetime.now(UTC).timestamp()))
    out = subprocess.run([sys.executable, "-c", _VERIFY, str(store_dir), str(now)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240, env=_ENV)
    assert out.returncode == 0, out.stderr
    checks = [PanelCheck(**{**c, "columns": tuple(c["columns"]),
                            "expected": tuple(c["expected"])}) for c in json.loads(out.stdout)]
    return store_dir, now, checks


@pytest.fixture(scope="module")
def checks(seeded: tuple[Path, float, list[PanelCheck]]) -> list[PanelCheck]:
    return seeded[2]


def cli(store_dir: Path, now: float, *argv: str) -> subprocess.CompletedProcess[str]:
    """``trainguard grafana verify`` over the seeded hour, in its own process."""
    start, end = (datetime.fromtimestamp(t, UTC).isoformat() for t in (now - HOUR, now))
    cmd = [sys.executable, "-m", "trainguard.cli", "grafana", "verify",
           "--store", f"chdb://{store_dir}", "--from", start, "--to", end, *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=_ENV)


@pytest.mark.integration
def test_every_panel_and_variable_query_passes_on_the_synthetic_store(checks):
    real = [c for c in checks if c.dashboard != "broken"]
    assert {c.dashboard for c in real} == set(UIDS)
    assert len([c for c in real if c.kind == "panel"]) == sum(
        len(d.panels) for d in all_dashboards())
    assert [f"{c.dashboard} / {c.panel}: {c.error}" for c in failures(real)] == []


@pytest.mark.integration
def test_the_job_dashboards_alert_annotation_runs_and_finds_the_jobs_alerts(checks):
    (ann,) = [c for c in checks if c.kind == "annotation"]
    assert (ann.dashboard, ann.panel, ann.ok) == ("trainguard-job", "@Alerts", True), ann.error
    assert ann.rows == 2 and ann.columns == ("time", "timeEnd", "title", "text", "tags")


@pytest.mark.integration
def test_every_panel_returns_rows_when_its_tables_have_data(checks):
    empty = [f"{c.dashboard} / {c.panel}" for c in checks if c.dashboard != "broken" and not c.rows]
    assert empty == []


@pytest.mark.integration
def test_a_broken_panel_is_reported_with_the_store_error(checks):
    (broken,) = [c for c in checks if c.dashboard == "broken"]
    assert not broken.ok and broken.status == "FAIL"
    assert broken.error.startswith("query:") and "no_such_column" in broken.error


@pytest.mark.integration
def test_the_verify_command_prints_a_line_per_query_and_exits_0_when_all_pass(seeded):
    store_dir, now, checks = seeded
    out = cli(store_dir, now)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout and "Consistency checks" in out.stdout
    assert f"{len(checks) - 1} of {len(checks) - 1} queries passed" in out.stdout  # less BROKEN


@pytest.mark.integration
def test_the_verify_command_exits_1_when_a_panel_fails(seeded):
    store_dir, now, _ = seeded
    out = cli(store_dir, now, "--var", "job=no-such-job")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "no rows" in out.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "yesterday"], "--from 'yesterday'; expected 'now', now-DURATION"),
    (["--to", "2025-01-31T18:00"], "has no timezone"),
    (["--from", "now", "--to=-1h"], "is not before --to"),
    (["--var", "job"], "expected NAME=VALUE"),
])
def test_the_verify_command_checks_its_arguments_before_opening_the_store(argv, message, capsys):
    assert main(["grafana", "verify", "--store", "chdb:///nonexistent/store", *argv]) == 2
    assert message in capsys.readouterr().err


def test_times_may_be_relative_to_now_or_iso_with_a_timezone():
    now = 1_700_000_000.0
    assert parse_time("--from", "-1h", now) == now - 3600
    assert parse_time("--from", "now-30m", now) == now - 1800
    assert parse_time("--to", "now", now) == now
    assert parse_time("--to", "2023-11-14T22:13:20Z", now) == now


# -- the judging, against a fake store ---------------------------------------------------


class FakeStore(Store):
    """Answers every query with one canned result (or error), and records the SQL."""

    database = "db"

    def __init__(self, result: QueryResult | Exception) -> None:
        self.result = result
        self.seen: list[str] = []

    def command(self, sql: str) -> None:
        raise AssertionError("verify must only read")

    def query(self, sql: str) -> QueryResult:
        self.seen.append(sql)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def _insert_block(self, table: str, columns: list[str] | None, body: bytes) -> None:
        raise AssertionError("verify must only read")

    def close(self) -> None:
        pass


def board(*panels: Panel, variables: tuple[Variable, ...] = (),
          annotations: tuple[Annotation, ...] = ()) -> Dashboard:
    return Dashboard(uid="b", title="b", description="", panels=panels, variables=variables,
                     annotations=annotations)


TS = Panel("ts", "timeseries", sql="SELECT $__timeInterval(ts) AS time, 1 AS v "
           "FROM {database}.t WHERE $__timeFilter(ts)", columns=("time", "v"))
ROWS = QueryResult(columns=["time", "v"], rows=[("2026-01-01 00:00:00", 1)])


def run(store: Store, *panels: Panel, **kw: Any) -> list[PanelCheck]:
    boards = [board(*panels, variables=kw.pop("variables", ()),
                    annotations=kw.pop("annotations", ()))]
    return verify(store, boards, start=0.0, end=HOUR, variables=kw.pop("given", {}), **kw)


def test_a_query_error_fails_the_panel_with_the_error_text():
    (check,) = run(FakeStore(StoreError("UNKNOWN_IDENTIFIER v")), TS)
    assert not check.ok and check.error == "query: UNKNOWN_IDENTIFIER v"


def test_zero_rows_fail_a_panel_unless_it_allows_empty():
    store = FakeStore(QueryResult(columns=["time", "v"], rows=[]))
    table = Panel("t", "table", sql="SELECT 1 AS v", format="table", allow_empty=True)
    failed, allowed = run(store, TS, table)
    assert (failed.ok, failed.error) == (False, "no rows")
    assert (allowed.ok, allowed.status) == (True, "empty")


def test_other_columns_than_declared_fail_the_panel():
    (check,) = run(FakeStore(QueryResult(columns=["time", "w"], rows=[(1, 2)])), TS)
    assert check.error == "columns ['time', 'w'] != expected ['time', 'v']"


def test_a_time_series_must_return_time_first():
    panel = Panel("p", "timeseries", sql="SELECT 1 AS v")
    (check,) = run(FakeStore(QueryResult(columns=["v"], rows=[(1,)])), panel)
    assert "first column named 'time'" in check.error


def test_an_unknown_macro_fails_at_expansion_without_querying():
    store = FakeStore(ROWS)
    (check,) = run(store, Panel("p", "timeseries", sql="SELECT $__nope(ts)"))
    assert check.error.startswith("expand: unknown macro $__nope") and store.seen == []


def test_the_sql_is_expanded_with_the_range_interval_and_database():
    store = FakeStore(ROWS)
    (check,) = run(store, TS, interval_s=60)
    assert check.ok and store.seen == [check.sql]
    assert check.sql == ("SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS time, "
                         "1 AS v FROM db.t WHERE ts >= toDateTime(0) AND ts <= toDateTime(3600)")


def test_variables_default_to_all_or_their_first_value_and_feed_the_panels():
    store = FakeStore(QueryResult(columns=["v"], rows=[("a",), ("b",)]))
    variables = (Variable("x", "X", sql="SELECT 'x'", include_all=False),
                 Variable("y", "Y", sql="SELECT 'y'", multi=True))
    panel = Panel("p", "table", format="table",
                  sql="SELECT ${x:singlequote}, $__conditionalAll(y IN ($y), $y), ${y:csv}")
    *_, check = run(store, panel, variables=variables)
    assert check.sql == "SELECT 'a', 1=1, a,b"  # All outside conditionalAll: every option


def test_a_given_value_pins_a_variable():
    store = FakeStore(QueryResult(columns=["v"], rows=[("a",), ("b",)]))
    variables = (Variable("y", "Y", sql="SELECT 'y'", multi=True),)
    panel = Panel("p", "table", format="table", sql="SELECT $__conditionalAll(y IN ($y), $y)")
    *_, check = run(store, panel, variables=variables, given={"y": "b"})
    assert check.sql == "SELECT y IN ('b')"


def test_pinning_a_variable_no_dashboard_has_is_an_error():
    with pytest.raises(ConfigError, match="no dashboard has a variable 'jobb'; they have: y"):
        run(FakeStore(ROWS), TS, variables=(Variable("y", "Y", sql="SELECT 1"),),
            given={"jobb": "x"})


def test_a_variable_without_values_fails():
    store = FakeStore(QueryResult(columns=["v"], rows=[]))
    var_check, _ = run(store, TS, variables=(Variable("y", "Y", sql="SELECT 1"),))
    assert (var_check.kind, var_check.ok) == ("variable", False)
    assert var_check.error == "no rows: the variable offers no values"


ANNOTATION = Annotation("Events", sql="SELECT t AS time, t AS timeEnd, 'a' AS title, "
                        "'b' AS text, 'c' AS tags FROM {database}.e WHERE $__timeFilter(t)")


def test_an_annotation_query_runs_after_the_panels_and_may_return_no_rows():
    store = FakeStore(QueryResult(columns=list(ANNOTATION.columns), rows=[]))
    table = Panel("t", "table", sql="SELECT 1", format="table", allow_empty=True)
    _, check = run(store, table, annotations=(ANNOTATION,))
    assert (check.kind, check.panel, check.ok, check.status) == (
        "annotation", "@Events", True, "empty")
    assert check.sql == ("SELECT t AS time, t AS timeEnd, 'a' AS title, 'b' AS text, "
                         "'c' AS tags FROM db.e WHERE t >= toDateTime(0) AND t <= toDateTime(3600)")


def test_an_annotation_returning_other_columns_fails():
    store = FakeStore(QueryResult(columns=["time", "text"], rows=[(1, "x")]))
    (check,) = run(store, annotations=(ANNOTATION,))
    assert not check.ok and check.error == (
        "columns ['time', 'text'] != expected ['time', 'timeEnd', 'title', 'text', 'tags']")


def test_an_annotation_query_error_fails_with_the_error_text():
    (check,) = run(FakeStore(StoreError("UNKNOWN_TABLE e")), annotations=(ANNOTATION,))
    assert (check.kind, check.error) == ("annotation", "query: UNKNOWN_TABLE e")
