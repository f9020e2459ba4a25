"""StepFileTail on real files: appends, partial lines, truncation, rotation, bad lines."""

import json
import math

import pytest

from trainguard.agents.collectors.steps_file import StepFileTail


def line(step, **fields):
    return json.dumps({"step": step, "ts": 1_795_000_000.0 + step, **fields}) + "\n"


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


@pytest.fixture
def log(tmp_path):
    return tmp_path / "steps.jsonl"


def tail_of(log, **kw):
    return StepFileTail(log, job_id="job-1", rank=0, world_size=2, node="node-a", **kw)


def test_appended_lines_are_read_once_with_defaults_filled(log):
    log.write_text("")
    tail = tail_of(log)
    append(log, line(0, loss=2.5) + line(1, loss=2.4, rank=1))
    records = tail.poll()
    assert [(r.step, r.rank, r.loss) for r in records] == [(0, 0, 2.5), (1, 1, 2.4)]
    assert all(r.job_id == "job-1" and r.node == "node-a" and r.world_size == 2 for r in records)
    assert tail.poll() == []
    assert tail.steps_received == 2


def test_a_partial_last_line_waits_for_its_newline(log):
    log.write_text("")
    tail = tail_of(log)
    full = line(5, loss=1.0)
    append(log, full[:10])
    assert tail.poll() == []
    append(log, full[10:])
    assert [r.step for r in tail.poll()] == [5]
    assert tail.steps_malformed == 0


def test_an_existing_file_is_read_from_its_end_unless_from_start(log):
    log.write_text(line(0) + line(1))
    assert tail_of(log).poll() == []
    assert [r.step for r in tail_of(log, from_start=True).poll()] == [0, 1]
    tail = tail_of(log)
    append(log, line(2))
    assert [r.step for r in tail.poll()] == [2]


def test_a_missing_file_is_no_error_and_is_read_from_its_start_once_created(log):
    tail = tail_of(log)
    assert tail.poll() == []
    log.write_text(line(0) + line(1))
    assert [r.step for r in tail.poll()] == [0, 1]


def test_truncation_restarts_from_the_beginning(log):
    log.write_text("")
    tail = tail_of(log)
    append(log, line(0) + line(1) + line(2))
    assert len(tail.poll()) == 3
    log.write_text(line(9))  # shorter than what was read: truncated in place
    assert [r.step for r in tail.poll()] == [9]
    assert tail.rotations == 1


def test_rotation_finishes_the_old_file_then_reads_the_new_one(log):
    log.write_text("")
    tail = tail_of(log)
    append(log, line(0))
    assert [r.step for r in tail.poll()] == [0]
    append(log, line(1))
    log.rename(log.with_suffix(".1"))
    log.write_text(line(2) + line(3) + line(4))
    assert [r.step for r in tail.poll()] == [1, 2, 3, 4]
    assert tail.rotations == 1


def test_malformed_lines_are_counted_by_reason_and_skipped(log):
    log.write_text("")
    tail = tail_of(log)
    append(
        log,
        "not json at all\n"
        + json.dumps([1, 2])
        + "\n"
        + line(1, step_time_s=-1.0)
        + json.dumps({"kind": "heartbeat", "step": 2, "ts": 1.0})
        + "\n"
        + "\n"
        + line(3),
    )
    assert [r.step for r in tail.poll()] == [3]
    assert tail.malformed_by_reason == {"not_json": 1, "invalid": 2, "wrong_kind": 1}
    assert tail.steps_malformed == 4 and tail.last_error is not None


def test_python_json_nan_is_read_as_none_and_counted(log):
    log.write_text("")
    tail = tail_of(log)
    append(log, line(0, loss=math.nan, grad_norm=math.inf))
    (record,) = tail.poll()
    assert record.loss is None and record.grad_norm is None
    assert tail.nonfinite == 1


def test_a_line_without_ts_is_stamped_with_the_read_time(log):
    log.write_text("")
    tail = StepFileTail(log, job_id="j", rank=0, world_size=1, node="n", clock=lambda: 123.0)
    append(log, json.dumps({"step": 0}) + "\n")
    assert tail.poll()[0].ts == 123.0


def test_a_line_missing_identity_without_a_default_is_invalid(log):
    log.write_text("")
    tail = StepFileTail(log, node="n")
    append(log, line(0) + line(1, job_id="j", rank=0, world_size=1))
    assert [r.step for r in tail.poll()] == [1]
    assert tail.malformed_by_reason == {"invalid": 1}


def test_an_over_long_line_is_skipped_whole(log):
    log.write_text("")
    tail = tail_of(log, max_line_bytes=100, max_bytes_per_poll=150)
    append(log, "x" * 400)
    assert tail.poll() == [] and tail.poll() == []
    append(log, "x" * 10 + "\n" + line(7))
    records = []
    for _ in range(5):
        records += tail.poll()
    assert [r.step for r in records] == [7]
    assert tail.malformed_by_reason == {"too_large": 1}


def test_an_invalid_utf8_line_is_counted_and_skipped_not_fatal(log):
    log.write_text("")
    tail = tail_of(log)
    bad_string = b'{"step": 1, "ts": 1795000001.0, "job_id": "job-\xff\xfe"}\n'
    deep = b'{"step": 2, "junk": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    with open(log, "ab") as f:
        f.write(line(0).encode() + bad_string + deep + line(3).encode())
    records = tail.poll()
    assert [r.step for r in records] == [0, 3]
    assert tail.steps_malformed == 2 and tail.steps_received == 2
    assert tail.malformed_by_reason.get("not_json", 0) >= 1
    append(log, line(4))
    assert [r.step for r in tail.poll()] == [4]


def test_a_log_lines_own_pid_and_uid_are_not_believed(log):
    log.write_text("")
    tail = tail_of(log)
    append(log, line(0, loss=2.5, pid=1, uid=0))
    [record] = tail.poll()
    assert (record.pid, record.uid, record.loss) == (None, None, 2.5)
