"""bench/scan_ceiling.py: the scan reads what msgspec reads, and the bench says when not."""

from __future__ import annotations

import msgspec
import pytest

from bench.loadgen import FleetLoad
from bench.scan_ceiling import check_same, scan, scan_ceiling
from trainguard.schemas.records import GpuSampleBatch, StepBatch
from trainguard.schemas.topics import Topics


def _messages(nodes: int, form: str = "samples") -> list[bytes]:
    topics = Topics()
    topic = topics.samples if form == "samples" else topics.steps
    return [v for t, _, v in FleetLoad(topics, nodes).tick(3, 1.7e9) if t == topic]


def test_a_small_fleet_gives_every_figure_and_checks_every_value():
    figures = scan_ceiling(nodes=20, rounds=2)
    # Every GPU's fields but its three lists and maps; every step's but ``nonfinite``.
    assert figures["samples"]["compared"] == 20 * 8 * 25
    assert figures["steps"]["compared"] == 20 * 8 * 30
    for form in ("samples", "steps"):
        for name in ("msgspec", "free", "scan", "scan+setup"):
            assert figures[form][name] > 0


@pytest.mark.parametrize(("form", "batch"), [("samples", GpuSampleBatch), ("steps", StepBatch)])
def test_a_value_the_scan_read_differently_is_an_error(form, batch):
    messages = _messages(3, form)
    records = [msgspec.json.decode(m, type=batch) for m in messages]
    with pytest.raises(AssertionError, match="message 0 item 0"):
        check_same(messages, records[::-1], form)  # another node's items in the first place


def test_a_message_outside_the_scanned_form_is_refused_not_misread():
    message = _messages(1)[0].replace(b'"util_gpu_pct":', b'"util_gpu_pct":1e1,"x":', 1)
    with pytest.raises(ValueError, match="outside the form"):
        scan([message])
    step = _messages(1, "steps")[0].replace(b'"nonfinite":[]', b'"nonfinite":["loss"]', 1)
    with pytest.raises(ValueError, match="outside the form"):
        scan([step], "steps")
