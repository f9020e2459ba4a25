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
    if scenario is None:
        assert "clean run: 0 findings" in text, text
    else:
        assert "injected weight_tamper on rank" in text and "named correctly" in text, text
        assert "FINDING param_divergence (integrity)" in text, text
