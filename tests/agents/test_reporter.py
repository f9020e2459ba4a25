"""StepReporter against real Unix datagram sockets: never blocks, never raises, counts drops."""

import math
import os
import socket
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from trainguard.agents.intake import StepIntake
from trainguard.agents.reporter import StepReporter
from trainguard.schemas.records import StepRecord


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_importing_the_reporter_pulls_in_nothing_heavy():
    code = (
        "import sys, trainguard.agents.reporter;"
        "heavy = [m for m in ('kafka', 'faust', 'numpy', 'chdb', 'clickhouse_connect',"
        " 'aiokafka', 'trainguard.cli', 'trainguard.agents.daemon') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_field_survives_the_round_trip_to_the_intake(sock_path):
    with (
        StepIntake(sock_path) as intake,
        StepReporter(
            "job-1",
            rank=3,
            world_size=8,
            socket_path=str(sock_path),
            node="node-a",
            local_rank=3,
            gpu_index=3,
            env_fingerprint="env-abc",
            seed_fingerprint="seed-7",
            dp_rank=1,
            tp_rank=1,
            pp_rank=0,
        ) as reporter,
    ):
        assert reporter.report(
            42,
            loss=1.25,
            grad_norm=0.5,
            lr=3e-4,
            step_time_s=0.8,
            samples_per_s=320.0,
            tokens_per_s=655360.0,
            loss_scale=65536.0,
            param_checksum="c0ffee",
            local_grad_norm=0.75,
            compute_time_s=0.6,
            ts=1_795_000_000.5,
        )
        wait_for(lambda: intake.steps_received == 1)
        assert intake.drain() == [
            StepRecord(
                job_id="job-1",
                rank=3,
                world_size=8,
                node="node-a",
                step=42,
                ts=1_795_000_000.5,
                local_rank=3,
                gpu_index=3,
                loss=1.25,
                grad_norm=0.5,
                lr=3e-4,
                step_time_s=0.8,
                samples_per_s=320.0,
                tokens_per_s=655360.0,
                loss_scale=65536.0,
                param_checksum="c0ffee",
                env_fingerprint="env-abc",
                dp_rank=1,
                tp_rank=1,
                pp_rank=0,
                local_grad_norm=0.75,
                compute_time_s=0.6,
                seed_fingerprint="seed-7",
                pid=os.getpid(),  # stamped by the agent from the kernel's credentials
                uid=os.getuid(),
            )
        ]
        assert reporter.sent == 1 and reporter.dropped == 0
        assert intake.steps_malformed == 0 and intake.datagrams_dropped == 0


def test_with_no_agent_report_returns_false_and_counts_every_drop(sock_path):
    reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
    results = [reporter.report(step, loss=1.0) for step in range(1000)]
    assert not any(results)
    assert reporter.dropped == 1000 and reporter.sent == 0


def test_a_stale_socket_file_with_no_agent_is_a_drop_not_an_error(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: connect gives ECONNREFUSED
    reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
    assert reporter.report(0) is False
    assert reporter.dropped == 1


def test_reconnect_attempts_are_rate_limited(sock_path):
    clock = FakeClock()
    reporter = StepReporter(
        "job-1", 0, 1, socket_path=str(sock_path), node="n", reconnect_interval_s=1.0, clock=clock
    )
    assert reporter.report(0) is False
    with StepIntake(sock_path) as intake:
        clock.now += 0.5
        assert reporter.report(1) is False  # within the interval: not even tried
        clock.now += 0.6
        assert reporter.report(2) is True
        wait_for(lambda: intake.steps_received == 1)
    assert reporter.dropped == 2


def test_drops_before_the_agent_came_up_reach_its_datagrams_dropped(sock_path):
    reporter = StepReporter(
        "job-1", 0, 1, socket_path=str(sock_path), node="n", reconnect_interval_s=0.0
    )
    for step in range(5):
        reporter.report(step)
    with StepIntake(sock_path) as intake:
        assert reporter.report(5) is True
        wait_for(lambda: intake.steps_received == 1)
        assert intake.datagrams_dropped == 5
        reporter.report(6)
        wait_for(lambda: intake.steps_received == 2)
        assert intake.datagrams_dropped == 5  # a cumulative count is not added twice


def test_a_full_receive_queue_drops_instead_of_blocking(sock_path):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))  # bound but never read: its queue fills up
    try:
        reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
        for step in range(10_000):
            reporter.report(step, loss=1.0)
            if reporter.dropped:
                break
        assert reporter.dropped >= 1 and reporter.sent >= 1
        for step in range(100):
            assert reporter.report(step) is False
        receiver.setblocking(False)
        while True:
            try:
                receiver.recv(65536)
            except BlockingIOError:
                break
        assert reporter.report(999) is True  # same connection, room again
    finally:
        receiver.close()


def test_an_agent_restart_is_followed_after_the_reconnect_interval(sock_path):
    reporter = StepReporter(
        "job-1", 0, 1, socket_path=str(sock_path), node="n", reconnect_interval_s=0.0
    )
    with StepIntake(sock_path):
        assert reporter.report(0) is True
    assert reporter.report(1) is False  # old peer gone
    with StepIntake(sock_path) as intake:
        assert reporter.report(2) is True
        wait_for(lambda: intake.steps_received == 1)
        assert [r.step for r in intake.drain()] == [2]
        assert intake.datagrams_dropped == 1


def test_non_float_numbers_are_coerced_and_unconvertible_ones_dropped(sock_path):
    with StepIntake(sock_path) as intake:
        reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
        assert reporter.report(0, loss=2, lr=Fraction(1, 4)) is True
        assert reporter.report(1, loss="not a number") is False  # type: ignore[arg-type]
        wait_for(lambda: intake.steps_received == 1)
        (record,) = intake.drain()
        assert record.loss == 2.0 and record.lr == 0.25
        assert reporter.dropped == 1


def test_non_finite_values_travel_as_none_and_are_named(sock_path):
    with StepIntake(sock_path) as intake:
        reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
        assert reporter.report(0, loss=math.nan, grad_norm=math.inf, lr=1e-4) is True
        wait_for(lambda: intake.steps_received == 1)
        (record,) = intake.drain()
        assert record.loss is None and record.grad_norm is None and record.lr == 1e-4
        assert intake.nonfinite == 1
        assert intake.nonfinite_by_field == {"loss": 1, "grad_norm": 1}


def test_a_closed_reporter_drops_and_never_raises(sock_path):
    with StepIntake(sock_path):
        with StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n") as reporter:
            assert reporter.report(0) is True
        assert reporter.report(1) is False
        assert reporter.dropped == 1


def test_node_defaults_to_the_hostname(sock_path):
    assert StepReporter("job-1", 0, 1, socket_path=str(sock_path)).node == socket.gethostname()


@pytest.mark.parametrize(
    ("job_id", "rank", "world_size"), [("", 0, 1), ("j", -1, 2), ("j", 2, 2), ("j", 0, 0)]
)
def test_a_misconfigured_reporter_fails_at_construction(job_id, rank, world_size):
    with pytest.raises(ValueError):
        StepReporter(job_id, rank, world_size)


def test_a_forked_child_reports_as_its_own_sender(sock_path):
    with StepIntake(sock_path) as intake:
        reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
        reporter.dropped = 7  # pretend the parent lost some
        assert reporter.report(0) is True
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: its counts start from zero
            os.close(done_w)
            ok = reporter.report(1) and reporter.dropped == 0 and reporter.sent == 1
            os.read(done_r, 1)  # alive until the agent read it: the parent's child may speak
            os._exit(0 if ok else 1)
        os.close(done_r)
        wait_for(lambda: intake.steps_received == 2)
        os.close(done_w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert intake.datagrams_dropped == 7


def test_a_datagram_too_large_to_send_is_dropped_alone(sock_path):
    with StepIntake(sock_path) as intake:
        reporter = StepReporter("job-1", 0, 1, socket_path=str(sock_path), node="n")
        assert reporter.report(0, param_checksum="x" * 1_000_000) is False
        assert reporter.report(1) is True  # still connected, no reconnect wait
        wait_for(lambda: intake.steps_received == 1)
        assert reporter.dropped == 1


def test_a_checkpoint_report_reaches_the_intake_apart_from_steps(sock_path):
    from trainguard.agents.reporter import CheckpointReport

    with (
        StepIntake(sock_path) as intake,
        StepReporter("job-1", rank=2, world_size=4, socket_path=str(sock_path),
                     node="node-b") as reporter,
    ):
        assert reporter.checkpoint("save", "ckpt/step-100", "ab" * 32, step=100, ts=5.0)
        # Validated by the agent, like steps: handed over, then counted as malformed there.
        assert reporter.checkpoint("load", "ckpt/step-100", "not hex!", step=100)
        wait_for(lambda: intake.checkpoints_received == 1 and intake.steps_malformed == 1)
        assert intake.drain() == []
        assert intake.drain_checkpoints() == [CheckpointReport(
            job_id="job-1", rank=2, node="node-b", step=100, ts=5.0, action="save",
            checkpoint_id="ckpt/step-100", digest="ab" * 32)]
        assert intake.malformed_by_reason == {"invalid": 1}


def test_a_datagram_with_neither_step_nor_checkpoint_is_counted_malformed(sock_path):
    with StepIntake(sock_path) as intake:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(str(sock_path))
        s.send(b'{"v":1,"pid":1,"dropped":0}')
        s.close()
        wait_for(lambda: intake.steps_malformed == 1)
        assert intake.malformed_by_reason == {"invalid": 1}
