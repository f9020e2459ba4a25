"""The committed dashboard JSON is exactly what the renderer writes from the model."""

from __future__ import annotations

from pathlib import Path

from trainguard.cli import main
from trainguard.grafana.dashboards import UIDS, all_dashboards
from trainguard.grafana.render import dumps, render

COMMITTED = Path(__file__).resolve().parents[3] / "infra" / "grafana" / "dashboards"
FIX = "the dashboards changed: run `trainguard grafana render` and commit infra/grafana/dashboards"


def test_the_committed_json_equals_a_fresh_render():
    titles = {d.uid: d.title for d in all_dashboards()}
    for board in all_dashboards():
        path = COMMITTED / f"{board.uid}.json"
        assert path.is_file(), f"{path} is missing; {FIX}"
        fresh = dumps(render(board, link_titles=titles))
        assert path.read_text(encoding="utf-8") == fresh, f"{path.name} is stale; {FIX}"


def test_no_stale_dashboard_files_are_left_behind():
    assert sorted(p.stem for p in COMMITTED.glob("*.json")) == sorted(UIDS), FIX


def test_the_render_command_writes_the_committed_files(tmp_path, capsys):
    assert main(["grafana", "render", "--out", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in written] == sorted(f"{uid}.json" for uid in UIDS)
    for path in written:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes()
    assert capsys.readouterr().out.count("wrote ") == len(UIDS)
