"""bench/scan_ceiling.py: the scan reads what msgspec reads, and the bench says when not."""

from __future__ import annotations

import msgspec
import pytest

from bench.loadgen import FleetLoad
from bench.scan_ceiling import check_same, scan, scan_ceiling
from trainguard.schemas.records import GpuSampleBatch
from trainguard.schemas.topics import Topics


def _samples(nodes: int) -> list[bytes]:
    topics = Topics()
    return [v for t, _, v in FleetLoad(topics, nodes).tick(3, 1.7e9) if t == topics.samples]


def test_a_small_fleet_gives_every_figure_and_checks_every_gpu_value():
    figures = scan_ceiling(nodes=20, rounds=2)
    assert figures["compared"] == 20 * 8 * 25  # every GPU's fields but the three tuples
    for name in ("msgspec", "free", "scan", "scan+setup"):
        assert figures[name] > 0


def test_a_value_the_scan_read_differently_is_an_error():
    messages = _samples(3)
    records = [msgspec.json.decode(m, type=GpuSampleBatch) for m in messages]
    with pytest.raises(AssertionError, match="message 0 GPU 0"):
        check_same(messages, records[::-1])  # another node's GPUs in the first place


def test_a_message_outside_the_scanned_form_is_refused_not_misread():
    message = _samples(1)[0].replace(b'"util_gpu_pct":', b'"util_gpu_pct":1e1,"x":', 1)
    with pytest.raises(ValueError, match="outside the form"):
        scan([message])
