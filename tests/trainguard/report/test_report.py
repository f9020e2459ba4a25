"""``trainguard report``: an incident's panels as PNGs and one HTML page, from a real store.

chdb binds a process to one directory for its lifetime, and the store tests under
tests/pipeline hold theirs, so everything that opens a store runs in a subprocess on its
own directory here: one seeds a 16-rank job whose rank 6 departs and an alert blaming it,
renders the reports and prints what it wrote as JSON; the images and the page are then
checked in this process. Most tests draw a small fake of the job dashboard, so that they
state what is drawn independently of how the real one (trainguard.grafana.dashboards)
evolves; one draws the real one.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import msgspec
import pytest

from trainguard.cli import report as report_cmd
from trainguard.errors import ConfigError
from trainguard.grafana.model import Dashboard, Panel
from trainguard.report import Incident, Series, draw_panel
from trainguard.schemas.records import Alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
_ENV = {**os.environ, "TRAINGUARD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}

T0 = 1_760_000_000.0  # 2025-10-09 08:53:20 UTC
FAULT = T0 + 600  # rank 6's loss starts to climb; node-01's GPUs go idle
NODES = ["node-00", "node-01", "node-02", "node-03"]  # four ranks each: rank 6 on node-01

LOSS = Panel(
    title="Loss by rank", kind="timeseries", unit="short", series="rank",
    sql="SELECT $__timeInterval(ts) AS time, rank, avg(loss) AS loss FROM {database}.steps "
        "WHERE job_id = '${job}' AND $__timeFilter(ts) GROUP BY time, rank ORDER BY time, rank",
)
UTIL = Panel(
    title="GPU utilization by node", kind="timeseries", unit="percent", series="node",
    sql="SELECT $__timeInterval(ts) AS time, node, avg(util_gpu_pct) AS util "
        "FROM {database}.gpu_samples WHERE job_id = '${job}' AND $__timeFilter(ts) "
        "GROUP BY time, node ORDER BY time",
)
BROKEN = Panel(title="Broken panel", kind="timeseries", unit="s",
               sql="SELECT ts AS time, no_such_column FROM {database}.steps")
DASHBOARDS = (
    Dashboard(uid="trainguard-fleet", title="Fleet", description="", panels=(
        Panel(title="Not this one", kind="timeseries", sql="SELECT now() AS t, 1 AS v"),)),
    Dashboard(uid="trainguard-job", title="Job", description="", panels=(
        LOSS, Panel(title="Findings", kind="table", format="table", sql="SELECT 1"), UTIL,
        BROKEN)),
)

SUMMARY = "rank 6 on node-01: loss 9.1 vs replicas' 2.3 & <rising>"
FIRING = Alert(
    alert_id="fp-r6-1760000630000", fingerprint="fp-r6", status="firing", severity="page",
    check="loss_divergence", summary=SUMMARY, cluster="c1", ts=FAULT + 30, starts_at=FAULT + 30,
    job_id="job-16", node="node-01", rank=6,
    evidence={"first_seen": FAULT, "last_seen": FAULT + 30, "observed": 9.1, "expected": 2.3,
              "finding_id": "find-r6", "ranks": "6"},
    labels={"severity": "page", "check": "loss_divergence"},
    runbook_url="https://trainguard.example/runbooks/loss_divergence",
    dashboard_url="https://grafana.example/d/trainguard-job?var-job=job-16",
)
RESOLVED = msgspec.structs.replace(FIRING, status="resolved", ts=FAULT + 420, ends_at=FAULT + 420)
#: Still firing: only the finding (last seen at FAULT + 500) says how long it went on.
OPEN = msgspec.structs.replace(
    FIRING, alert_id="fp-open-1", fingerprint="fp-open",
    evidence={"first_seen": FAULT, "last_seen": FAULT + 30, "finding_id": "find-open"},
)


def seed(store: Any) -> None:
    """Steps of a 16-rank job, its GPU samples, two alerts and a finding (in the subprocess)."""
    from trainguard.pipeline.sinks.rows import rows_for
    from trainguard.pipeline.store import migrate

    migrate(store)
    rng = random.Random(7)
    steps = []
    for step in range(600):
        ts = T0 + 2 * step
        for rank in range(16):
            loss = 3.0 * math.exp(-step / 400) + 0.03 * rng.random()
            if rank == 6 and ts >= FAULT:
                loss += (ts - FAULT) / 90
            steps.append({"cluster": "c1", "job_id": "job-16", "step": step, "rank": rank,
                          "world_size": 16, "node": NODES[rank // 4], "ts": ts, "loss": loss,
                          "step_time_s": 2.0 - 0.1 * rng.random()})
    store.insert_rows("steps", steps)
    samples = []
    for i in range(240):
        ts = T0 + 5 * i
        for node in NODES:
            for gpu in range(4):
                util = 60.0 if node == "node-01" and ts >= FAULT else 94.0 + 4 * rng.random()
                samples.append({"cluster": "c1", "node": node, "job_id": "job-16", "gpu": gpu,
                                "ts": ts, "util_gpu_pct": util})
    store.insert_rows("gpu_samples", samples)
    for alert in (FIRING, RESOLVED, OPEN):
        store.insert_rows("alerts", [row for _, row in rows_for(alert)])
    store.insert_rows("findings", [{
        "cluster": "c1", "job_id": "job-16", "check": "loss_divergence", "category": "integrity",
        "finding_id": "find-open", "first_seen": FAULT, "ts": FAULT, "last_seen": FAULT + 500,
        "ranks": [6], "nodes": ["node-01"], "summary": "rank 6", "check_version": "1",
    }])


_RENDER = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from trainguard.pipeline.store import ChdbStore
from tests.trainguard.report.test_report import DASHBOARDS, seed
from trainguard.errors import ConfigError
from trainguard.report import render_report

out = Path(sys.argv[2])
with ChdbStore(Path(sys.argv[1]), "trainguard") as store:
    seed(store)
    def run(name, **kw):
        result = render_report(store, out_dir=out / name, dashboards=DASHBOARDS, **kw)
        incident = asdict(result.incident)
        incident.pop("alert")
        return {"html": str(result.html), "incident": incident, "panels": [
            {"title": p.title, "path": str(p.path), "legend": list(p.legend),
             "description": p.description} for p in result.panels]}
    doc = {"alert": run("alert", alert_id=sys.argv[3]), "open": run("open", alert_id="fp-open-1"),
           "job": run("job", job_id="job-16", start=float(sys.argv[4]), end=float(sys.argv[5]),
                      node="node-02"),
           "plain": run("plain", job_id="job-16", start=float(sys.argv[4]),
                        end=float(sys.argv[5]))}
    real = render_report(store, out_dir=out / "real", alert_id=sys.argv[3])
    doc["real"] = [{"title": p.title, "legend": list(p.legend)} for p in real.panels]
    try:
        render_report(store, out_dir=out / "nope", alert_id="no-such-alert", dashboards=DASHBOARDS)
    except ConfigError as exc:
        doc["unknown"] = str(exc)
print(json.dumps(doc))
"""

_CLI = """
import argparse, sys
from trainguard.cli import report
from trainguard.errors import TrainguardError
parser = argparse.ArgumentParser(prog="trainguard")
report.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.func(args))
except TrainguardError as exc:
    print(f"trainguard report: error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Seed a store and render the alert's, the open alert's and the job's reports."""
    root = tmp_path_factory.mktemp("report")
    done = subprocess.run(
        [sys.executable, "-c", _RENDER, str(root / "store"), str(root / "out"),
         RESOLVED.alert_id, str(T0 + 60), str(T0 + 1140)],
        capture_output=True, text=True, timeout=240, env=_ENV, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    doc["store"] = str(root / "store")
    return doc


def test_one_png_per_timeseries_panel_of_the_job_dashboard(rendered: dict[str, Any]) -> None:
    panels = rendered["alert"]["panels"]
    assert [p["title"] for p in panels] == [LOSS.title, UTIL.title, BROKEN.title]
    for p in panels:
        image = matplotlib.image.imread(p["path"])
        assert image.shape[:2] == (450, 1200)
        assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_the_blamed_rank_and_node_are_drawn_highlighted(rendered: dict[str, Any]) -> None:
    loss, util, _ = rendered["alert"]["panels"]
    assert "rank 6 (blamed)" in loss["legend"] and "peers (15 ranks)" in loss["legend"]
    assert loss["description"].startswith("Loss by rank: rank 6 (blamed) drawn in red over 15")
    assert "node-01 (blamed)" in util["legend"] and "peers (3 nodes)" in util["legend"]
    assert {"first seen 09:03:20", "resolved 09:10:20"} <= set(loss["legend"])


def test_alert_time_range_is_first_seen_to_resolve_with_five_minutes_around(
    rendered: dict[str, Any],
) -> None:
    incident = rendered["alert"]["incident"]
    assert (incident["start"], incident["end"]) == (FAULT - 300, FAULT + 420 + 300)
    assert (incident["rank"], incident["node"], incident["job_id"]) == (6, "node-01", "job-16")
    assert incident["resolved_at"] == FAULT + 420


def test_a_still_firing_alert_runs_to_its_findings_last_seen(rendered: dict[str, Any]) -> None:
    incident = rendered["open"]["incident"]
    assert incident["resolved_at"] is None and incident["last_seen"] == FAULT + 500
    assert incident["end"] == FAULT + 800
    assert "last seen 09:11:40" in rendered["open"]["panels"][0]["legend"]


def test_the_page_embeds_every_image_with_the_summary_and_evidence(
    rendered: dict[str, Any],
) -> None:
    page_path = Path(rendered["alert"]["html"])
    page = page_path.read_text(encoding="utf-8")
    for p in rendered["alert"]["panels"]:
        assert Path(p["path"]).parent == page_path.parent
        assert f'src="{Path(p["path"]).name}"' in page
    assert html.escape(SUMMARY) in page and "<rising>" not in page
    assert "<th>finding_id</th><td>find-r6</td>" in page
    assert "<th>observed</th><td>9.1</td>" in page
    assert "<th>first_seen</th><td>2025-10-09 09:03:20 UTC</td>" in page
    assert f'href="{FIRING.runbook_url}"' in page and "var-job=job-16" in page


def test_the_real_job_dashboard_is_drawn_by_default(rendered: dict[str, Any]) -> None:
    from trainguard.grafana.dashboards import all_dashboards

    (job,) = [d for d in all_dashboards() if d.uid == "trainguard-job"]
    titles = [p.title for p in job.panels if p.kind == "timeseries"]
    assert [p["title"] for p in rendered["real"]] == titles
    loss = next(p for p in rendered["real"] if p["title"].startswith("Loss"))
    assert "rank 6 (blamed)" in loss["legend"]


def test_a_panel_whose_query_fails_is_drawn_with_the_error(rendered: dict[str, Any]) -> None:
    broken = rendered["alert"]["panels"][2]
    assert broken["description"].startswith("Broken panel: query failed:")
    assert "no_such_column" in broken["description"]


def test_a_job_report_highlights_the_node_asked_for_and_its_ranks(
    rendered: dict[str, Any],
) -> None:
    job = rendered["job"]
    assert (job["incident"]["start"], job["incident"]["end"]) == (T0 + 60, T0 + 1140)
    loss, util, _ = job["panels"]
    assert "node-02 (blamed)" in util["legend"]
    assert loss["legend"] == ["peers (12 ranks)", "rank 8, rank 9, rank 10, rank 11 (blamed)"]


def test_with_no_one_blamed_every_series_gets_a_colour_and_a_name(
    rendered: dict[str, Any],
) -> None:
    loss = rendered["plain"]["panels"][0]
    assert loss["legend"] == [f"rank {r}" for r in range(16)]
    assert loss["description"] == "Loss by rank: 16 ranks"


def test_an_unknown_alert_id_is_a_clear_error(rendered: dict[str, Any]) -> None:
    assert rendered["unknown"].startswith("no alert 'no-such-alert' in the store's alerts table")
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "report", "--alert", "no-such-alert",
         "--store", f"chdb://{rendered['store']}", "--out", rendered["store"] + "-out"],
        capture_output=True, text=True, timeout=120, env=_ENV, cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("trainguard report: error: no alert 'no-such-alert'")
    assert done.stderr.count("\n") == 1 and not done.stdout


def test_the_command_prints_the_paths_it_wrote_page_last(
    rendered: dict[str, Any], tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "report", "--alert", RESOLVED.alert_id,
         "--store", f"chdb://{rendered['store']}", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=_ENV, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines()]
    assert paths[-1] == tmp_path / "out" / "report.html"
    assert [p.suffix for p in paths[:-1]] == [".png"] * (len(paths) - 1) and len(paths) > 2
    assert all(p.is_file() for p in paths)


def test_a_large_job_draws_peers_as_median_and_band(tmp_path: Path) -> None:
    times = [T0 + 10 * i for i in range(60)]
    series = [Series(f"rank {r}", times, [1.0 + r / 1000 + (5.0 if r == 300 and i > 30 else 0)
                                          for i in range(60)], blamed=r == 300)
              for r in range(1024)]
    incident = Incident(title="big", start=T0, end=T0 + 600, job_id="big", rank=300,
                        first_seen=T0 + 300, last_seen=T0 + 400)
    image = draw_panel(tmp_path / "big.png", LOSS, series, incident)
    assert image.legend == ("min–max of 1023 ranks", "median of 1023 ranks", "rank 300 (blamed)",
                            "first seen 08:58:20", "last seen 09:00:00")
    assert matplotlib.image.imread(image.path).shape[:2] == (450, 1200)


def _run_command(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="trainguard")
    report_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--store", f"chdb://{tmp_path / 'never-opened'}"])
    result: int = args.func(args)
    return result


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--job", "j"], "--job needs --from and --to"),
        (["--job", "j", "--from", "2025-01-01T00:00", "--to", "2025-01-01T01:00Z"],
         "--from '2025-01-01T00:00' has no timezone"),
        (["--job", "j", "--from", "2025-01-01T02:00Z", "--to", "2025-01-01T01:00Z"],
         "is not before --to"),
        (["--job", "j", "--from", "yesterday", "--to", "2025-01-01T01:00Z"],
         "--from 'yesterday' is not an ISO 8601 time"),
        (["--alert", "a", "--rank", "3"], "--rank go with --job"),
    ],
)
def test_bad_arguments_fail_before_the_store_opens(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _run_command(tmp_path, "report", *argv)
    assert not (tmp_path / "never-opened").exists()
