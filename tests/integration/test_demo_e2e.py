"""The README's demo command, end to end on the session's broker: it stores every batch,
flags the injected sabotage naming the culprit rank, and exits 0."""

from __future__ import annotations

import uuid

import pytest

from trainguard.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", ["weight_tamper", None])
def test_the_demo_names_the_tampered_rank_or_stays_quiet_on_a_clean_run(
    scenario, bootstrap, tmp_path
):
    lines: list[str] = []
    opts = DemoOptions(nodes=2, gpus=4, duration_s=25, speed=12.0, scenario=scenario,
                       data_dir=tmp_path, bootstrap=bootstrap,
                       topic_prefix=f"demo{uuid.uuid4().hex[:8]}")
    assert run_demo(opts, out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "sample_batches" in text and "stream worker stopped" in text
    # Every panel, variable and annotation query of the four dashboards passes for this run.
    [views] = [line for line in lines if line.startswith("[demo] dashboards: 4 written to")]
    done, total = views.split("(")[1].split()[0].split("/")
    assert done == total and int(total) > 40, views
    assert len(list((tmp_path / "grafana" / "dashboards").glob("trainguard-*.json"))) == 4
    if scenario is None:
        assert "clean run: 0 findings" in text, text
        assert "incident report" not in text
    else:
        assert "injected weight_tamper on rank" in text and "named correctly" in text, text
        assert "FINDING param_divergence (integrity)" in text, text
        assert "PAGE firing param_divergence" in text, text  # reached the on-call
        [report] = [line for line in lines if "incident report for alert" in line]
        html = report.split(": ", 1)[1].split(" (")[0]
        pngs = list((tmp_path / "reports").glob("*/*.png"))
        assert html.endswith("report.html") and len(pngs) >= 6, report
