"""The agent's witness: reports of closed checkpoint files and of code trees that changed."""

import hashlib
from pathlib import Path

from trainguard.agents.collectors.witness import Witness
from trainguard.agents.config import WitnessSettings


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _witness(tmp_path, clock, **kw):
    ckpt, code = tmp_path / "ckpt", tmp_path / "torch"
    ckpt.mkdir()
    code.mkdir()
    (code / "ops.py").write_text("x = 1\n")
    settings = WitnessSettings(checkpoint_dirs=(ckpt,), framework_paths=(code,), mb_per_s=0,
                               scan_interval_s=1.0, code_interval_s=60.0, **kw)
    witness = Witness(settings, cluster="c1", node="node-a", clock=lambda: 1_800_000_000.0,
                      monotonic=clock)
    witness.files.start()
    return witness, ckpt, code


def _cycles(witness, clock, n=3):
    for _ in range(n):
        clock.now += 1.0
        witness.cycle(0.2)


def test_a_checkpoint_closed_after_writing_is_reported_with_its_sha256(tmp_path):
    clock = Clock()
    witness, ckpt, _ = _witness(tmp_path, clock)
    data = b"weights" * 1000
    (ckpt / "rank-0.pt").write_bytes(data)
    _cycles(witness, clock)
    [report] = [r for r in witness.poll("job-1") if r.subject == "checkpoint"]
    assert report.path == str(ckpt / "rank-0.pt")
    assert report.digest == hashlib.sha256(data).hexdigest() and report.size == len(data)
    assert report.node == "node-a" and report.cluster == "c1"
    assert witness.hashed >= 2  # the code tree's file and the checkpoint


def test_a_checkpoint_over_the_size_cap_is_reported_as_skipped(tmp_path):
    clock = Clock()
    witness, ckpt, _ = _witness(tmp_path, clock, max_file_bytes=10)
    (ckpt / "big.pt").write_bytes(b"x" * 11)
    _cycles(witness, clock)
    [report] = [r for r in witness.drain() if r.subject == "checkpoint"]
    assert report.digest is None and report.skipped == "too_large"
    assert witness.skipped == 1


def test_a_changed_framework_file_is_named_in_the_next_pass(tmp_path):
    clock = Clock()
    witness, _, code = _witness(tmp_path, clock)
    witness.job = "job-1"
    witness.cycle(0)
    [baseline] = witness.drain()
    assert baseline.subject == "framework" and baseline.job_id == "job-1"
    assert baseline.path == str(code) and baseline.changed_files == []
    (code / "ops.py").write_text("x = 2  # patched\n")
    clock.now += 30.0
    witness.cycle(0)
    assert witness.drain() == []  # not due yet
    clock.now += 31.0
    witness.cycle(0)
    [changed] = witness.drain()
    assert changed.changed_files == ["ops.py"] and changed.changed_count == 1
    assert changed.digest != baseline.digest


def test_a_new_job_gets_the_trees_fingerprints_at_once(tmp_path):
    clock = Clock()
    witness, _, _ = _witness(tmp_path, clock)
    witness.cycle(0)
    witness.drain()
    witness.job = "job-2"
    witness.cycle(0)
    [report] = witness.drain()
    assert report.job_id == "job-2" and report.changed_files == []


def test_the_oldest_reports_go_beyond_the_pending_cap(tmp_path):
    clock = Clock()
    witness, ckpt, _ = _witness(tmp_path, clock, max_pending=1)
    for name in ("a.pt", "b.pt"):
        Path(ckpt / name).write_bytes(name.encode())
    _cycles(witness, clock)
    reports = witness.drain()
    assert len(reports) == 1 and witness.dropped >= 1
