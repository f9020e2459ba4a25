"""rank_exited / rank_hung: the dead or hung rank is named although its peers stop too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgspec.structs import replace

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, first
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.ranks import EnvManifest, RankEvent
from trainguard.schemas.records import Finding, Heartbeat, Record, StepBatch

#: Ranks 0, 1 on node-00 and 2, 3 on node-01.
RANKS = 4


def _job() -> FakeJob:
    return FakeJob(RANKS, gpus=2, noise=False)


def _ev(rank: int, at: float, event: str, **kw: Any) -> RankEvent:
    kw.setdefault("pid", 1000 + rank)
    return RankEvent(rank=rank, ts=T0 + at, event=event, **kw)  # type: ignore[arg-type]


def _events(job: FakeJob, *events: RankEvent) -> list[StepBatch]:
    """One step batch per node carrying its ranks' events (no steps)."""
    by_node: dict[str, list[RankEvent]] = {}
    for ev in events:
        by_node.setdefault(job.node(ev.rank), []).append(ev)
    job.seq += 1
    return [StepBatch(cluster=job.cluster, node=node, job_id=job.job_id,
                      ts=max(e.ts for e in evs), seq=job.seq, agent_id=f"agent-{node}",
                      steps=[], events=tuple(evs)) for node, evs in by_node.items()]


def _run(groups: Sequence[Sequence[Record]], stage: ConsistencyStage | None = None
         ) -> list[Finding]:
    stage = stage or ConsistencyStage()
    found: list[Finding] = []
    for group in groups:
        found += stage.observe(list(group))
    return first(found)


def _steps(job: FakeJob, upto: int) -> list[list[StepBatch]]:
    return [job.step(s) for s in range(1, upto + 1)]


def _samples(job: FakeJob, *at: float) -> list[list[Any]]:
    return [job.samples(T0 + t) for t in at]


def _bye(rank: int, at: float, reason: str, step: int = 10) -> RankEvent:
    return _ev(rank, at, "bye", reason=reason, step=step)


# -- rank_hung -------------------------------------------------------------------------


def test_a_stopped_rank_is_hung_once_stopped_2s_while_only_samples_flow():
    job = _job()
    groups: list[Sequence[Record]] = [*_steps(job, 10), _events(job, _ev(2, 10.3, "stopped"))]
    assert _run(groups + _samples(job, 11.0, 12.0)) == []  # 1.7 s: not yet
    found = _run(groups + _samples(job, 11.0, 12.0, 12.5))
    assert checks(found) == ["rank_hung"]
    [f] = found
    assert (f.category, f.ranks, f.nodes) == ("availability", [2], ["node-01"])
    assert f.evidence["cause"] == "stopped" and f.evidence["pid"] == 1002
    assert f.evidence["stalled_s"] >= 2.0 and "stopped" in f.summary
    [alert] = AlertLifecycle().observe_findings([f])
    assert alert.severity == "page"


def test_heartbeats_alone_move_the_job_clock_to_judge_a_stop():
    job = _job()
    beats = [[Heartbeat(cluster=job.cluster, node="node-00", ts=T0 + t, seq=i, agent_id="a",
                        agent_version="1", uptime_s=1.0, backend="nvml", gpu_count=2,
                        job_id=job.job_id)] for i, t in enumerate((11.0, 13.0))]
    found = _run([*_steps(job, 10), _events(job, _ev(1, 10.5, "stopped")), *beats])
    assert [(f.check, f.ranks) for f in found] == [("rank_hung", [1])]


def test_a_rank_resumed_within_2s_is_not_hung():
    job = _job()
    found = _run([*_steps(job, 10), _events(job, _ev(2, 10.3, "stopped")),
                  _events(job, _ev(2, 11.5, "resumed")), *_samples(job, 12, 13, 14)])
    assert found == []


def test_a_hung_rank_clears_once_it_steps_again():
    job, stage = _job(), ConsistencyStage()
    found = stage.observe([b for g in _steps(job, 10) for b in g])
    found += stage.observe(_events(job, _ev(2, 10.3, "stopped")))
    for t in (11, 12, 13):
        found += stage.observe(job.samples(T0 + t))
    assert [f.check for f in found] == ["rank_hung"]
    for s in range(14, 40):  # resumed (the resume event was lost): it steps again
        found += stage.observe(job.step(s))
    assert found[-1].check == "rank_hung" and found[-1].cleared_at is not None
    assert stage.open_findings() == []


def test_peers_waiting_in_a_collective_name_the_live_rank_that_never_arrived():
    job = _job()
    waits = [_ev(r, 12.0, "waiting", since=T0 + 10.2, collective=77, step=11) for r in (0, 1, 3)]
    found = _run([*_steps(job, 10), _events(job, *waits), *_samples(job, 13, 14, 15, 16)])
    assert checks(found) == ["rank_hung"]
    [f] = found
    assert (f.ranks, f.nodes) == ([2], ["node-01"])
    assert f.evidence["cause"] == "never_arrived" and f.evidence["collective"] == 77
    assert f.evidence["waiting_ranks"] == 3 and "never arrived in collective 77" in f.summary


def test_a_rank_busy_saving_a_checkpoint_while_its_peers_wait_is_not_hung():
    # Rank 2 saves the checkpoint alone (the kit repeats ``busy`` every 2 s); its peers wait
    # for it in the next all-reduce meanwhile: a pause, not a hang.
    job = _job()
    waits = [_ev(r, 12.0, "waiting", since=T0 + 10.2, collective=77, step=11) for r in (0, 1, 3)]
    busy = [_ev(2, at, "busy", since=T0 + 10.1, phase="checkpoint") for at in (11.0, 13.0, 15.0)]
    found = _run([*_steps(job, 10), _events(job, *waits, busy[0]), *_samples(job, 13),
                  _events(job, busy[1]), *_samples(job, 14, 15), _events(job, busy[2]),
                  *_samples(job, 16, 17)])
    assert found == []


def test_a_busy_rank_that_goes_quiet_is_named_as_never_arrived():
    # The same save, but the kit's ``busy`` stops at 11 s (the rank hangs outside it).
    job = _job()
    waits = [_ev(r, 12.0, "waiting", since=T0 + 10.2, collective=77, step=11) for r in (0, 1, 3)]
    busy = _ev(2, 11.0, "busy", since=T0 + 10.1, phase="checkpoint")
    found = _run([*_steps(job, 10), _events(job, *waits, busy),
                  *_samples(job, 13, 14, 15, 16, 17)])
    assert checks(found) == ["rank_hung"]
    assert found[0].ranks == [2] and found[0].evidence["cause"] == "never_arrived"


def test_one_rank_waiting_among_eight_blames_nobody():
    job = FakeJob(8, gpus=4, noise=False)
    found = _run([*_steps(job, 10), _events(job, _ev(0, 12, "waiting", since=T0 + 10.2)),
                  *_samples(job, 13, 16, 18)])
    assert found == []


def test_waits_that_end_in_a_step_raise_nothing():
    job = _job()
    waits = [_ev(r, 12.0, "waiting", since=T0 + 10.2, collective=77) for r in (0, 1, 3)]
    found = _run([*_steps(job, 10), _events(job, *waits), job.step(11, T0 + 13.0),
                  *_samples(job, 14, 16, 18)])
    assert found == []


# -- rank_exited -----------------------------------------------------------------------


def _kill_scenario(peer_lag: float) -> list[Sequence[Record]]:
    """Rank 2 SIGKILLed at 10.5; its peers crash on the broken collective ``peer_lag`` later."""
    job = _job()
    kill = _ev(2, 10.5, "exited", signal=9)
    peers = [e for r in (0, 1, 3) for e in (_bye(r, 10.5 + peer_lag, "error"),
                                            _ev(r, 10.6 + peer_lag, "exited", exit_code=1))]
    return [*_steps(job, 10), _events(job, *peers), _events(job, kill),
            *_samples(job, 11, 12, 13, 14, 15)]


def test_a_killed_rank_is_blamed_and_its_crashing_peers_are_followers():
    found = _run(_kill_scenario(0.05))
    assert checks(found) == ["rank_exited"]
    [f] = found
    assert (f.category, f.ranks, f.nodes) == ("availability", [2], ["node-01"])
    assert f.evidence["signal"] == 9 and f.evidence["bye"] == "none"
    assert f.evidence["pid"] == 1002 and f.observed == "killed"
    assert f.evidence["followers"] == "0,1,3" and f.evidence["followers_count"] == 3
    assert "killed by signal 9" in f.summary
    [alert] = AlertLifecycle().observe_findings([f])
    assert alert.severity == "page"


def test_a_kill_noticed_after_its_peers_crashed_is_still_the_one_blamed():
    found = _run(_kill_scenario(-0.4))
    assert [(f.check, f.ranks) for f in found] == [("rank_exited", [2])]


def test_a_rank_that_raised_first_is_blamed_and_the_torn_down_peers_follow():
    job = _job()
    found = _run([*_steps(job, 10), _events(job, _bye(3, 10.2, "error"),
                                            _ev(3, 10.3, "exited", exit_code=1)),
                  _events(job, *[e for r in (0, 1, 2) for e in (
                      _bye(r, 11.0, "terminated"), _ev(r, 11.2, "exited", signal=15))]),
                  *_samples(job, 12, 13, 14, 15, 16, 17, 18)])
    assert [(f.check, f.ranks, f.observed) for f in found] == [("rank_exited", [3], "error")]
    assert found[0].evidence["followers"] == "0,1,2"


def test_ranks_killed_together_are_each_blamed_and_a_later_kill_follows():
    job = FakeJob(8, gpus=4, noise=False)
    node_kill = [_ev(r, 10.5 + r / 100, "exited", signal=9) for r in (4, 5)]
    peers = [e for r in (0, 1, 2, 3, 6) for e in (_bye(r, 11.0, "terminated"),
                                                   _ev(r, 11.1, "exited", signal=15))]
    # Rank 7 ignored SIGTERM: its launcher killed it 30 s later.
    found = _run([*_steps(job, 10), _events(job, *node_kill), _events(job, *peers),
                  *_samples(job, *range(12, 40, 2)), _events(job, _ev(7, 41.0, "exited")),
                  *_samples(job, *range(42, 50, 2))])
    assert [(f.check, f.ranks) for f in found] == [("rank_exited", [4]), ("rank_exited", [5])]
    assert found[0].evidence["followers"] == "0,1,2,3,6"


def test_a_rank_its_launcher_sigterms_right_after_a_kill_follows_it_without_a_bye():
    # Seen in the trainer e2e test: torchrun's agent on the killed rank's node stopped its
    # other worker 45 ms after the SIGKILL, before that worker's bye could leave.
    job = _job()
    found = _run([*_steps(job, 10),
                  _events(job, _ev(3, 10.50, "exited", signal=9),
                          _ev(2, 10.55, "exited", signal=15)),
                  _events(job, *[e for r in (0, 1) for e in (
                      _bye(r, 10.6, "error"), _ev(r, 10.7, "exited", exit_code=1))]),
                  *_samples(job, 11, 12, 13, 14, 15)])
    assert [(f.check, f.ranks) for f in found] == [("rank_exited", [3])]
    assert found[0].evidence["followers"] == "0,1,2"


def test_a_big_job_stopping_as_a_whole_raises_nothing():
    job = FakeJob(256, gpus=8, noise=False)
    found = _run([*_steps(job, 3), _teardown(job, 4.0), *_samples(job, 6, 8, 10, 12, 14)])
    assert found == []


def test_every_rank_saying_bye_finished_then_exiting_raises_nothing():
    job = _job()
    byes = [e for r in range(RANKS) for e in (_bye(r, 10.2, "finished"),
                                               _ev(r, 10.4 + r / 10, "exited", exit_code=0))]
    assert _run([*_steps(job, 10), _events(job, *byes), *_samples(job, 12, 14, 16, 18)]) == []


def test_ranks_finishing_up_to_a_minute_apart_raise_nothing():
    job = _job()
    # Rank 0 writes the final checkpoint and leaves 40 s after the others.
    byes = [e for r in range(RANKS) for at in [10.2 + (40 if r == 0 else r / 10)]
            for e in (_bye(r, at, "finished"), _ev(r, at + 0.2, "exited", exit_code=0))]
    found = _run([*_steps(job, 10), _events(job, *byes[2:]), _events(job, *byes[:2]),
                  *_samples(job, *range(12, 130, 4))])
    # (GPUs sampled busy a minute after the last step are job_stalled, category info.)
    assert [f.check for f in found if f.category != "info"] == []


def test_a_rank_saying_bye_finished_and_leaving_while_its_peers_wait_is_blamed():
    # An insider's way out: the rank says it finished, exits 0, and the job hangs on it.
    job = _job()
    groups: list[Sequence[Record]] = [*_steps(job, 10), _events(
        job, _bye(2, 10.2, "finished"), _ev(2, 10.3, "exited", exit_code=0))]
    assert _run(groups + _samples(job, *range(11, 70, 4))) == []  # within the minute
    found = _run(groups + _samples(job, *range(11, 80, 4)))
    exited = [f for f in found if f.check == "rank_exited"]
    assert [(f.ranks, f.nodes, f.observed) for f in exited] == [([2], ["node-01"], "finished")]
    assert "did not finish within 60 s" in exited[0].summary


def _teardown(job: FakeJob, at: float) -> list[StepBatch]:
    spread = min(0.25, 2.5 / job.ranks)  # the launcher stops every rank within 2.5 s
    return _events(job, *[e for r in range(job.ranks) for e in (
        _bye(r, at + r * spread, "terminated"),
        _ev(r, at + 0.1 + r * spread, "exited", signal=15))])


def test_an_elastic_restart_to_a_smaller_or_larger_world_raises_nothing():
    for new_size in (2, 6):
        job = _job()
        groups: list[Sequence[Record]] = [*_steps(job, 10), _teardown(job, 10.5)]
        small = FakeJob(new_size, gpus=2, noise=False)
        # The restart resumes from the step-8 checkpoint with new processes.
        groups += [small.step(s, T0 + 20 + s) for s in range(8, 30)]
        found = _run(groups)
        assert found == [], (new_size, [f.summary for f in found])


def test_a_restart_to_a_smaller_or_larger_world_raises_nothing_on_steps_alone():
    for new_size in (2, 8):
        job = _job()
        groups: list[Sequence[Record]] = [*_steps(job, 10)]
        other = FakeJob(new_size, gpus=2, noise=False)
        groups += [other.step(s, T0 + 20 + s) for s in range(8, 40)]
        stage = ConsistencyStage()
        found = _run(groups, stage)
        found += first(stage.flush(stage.watermark + 10))
        assert found == [], (new_size, [f.summary for f in found])


def test_a_lone_terminated_rank_whose_peers_keep_stepping_is_blamed():
    job = _job()
    groups: list[Sequence[Record]] = [*_steps(job, 10)]
    groups.append(_events(job, _bye(1, 10.2, "terminated"), _ev(1, 10.3, "exited", signal=15)))
    groups += [job.step(s, skip=[1]) for s in range(11, 20)]
    found = _run(groups)
    exited = [f for f in found if f.check == "rank_exited"]
    assert [(f.ranks, f.observed) for f in exited] == [([1], "terminated")]


def test_a_bye_arriving_after_its_exit_still_explains_it():
    job = _job()
    found = _run([*_steps(job, 10), _events(job, _ev(0, 10.4, "exited", exit_code=0)),
                  _events(job, _bye(0, 10.2, "finished")), *_samples(job, 11, 13, 15)])
    assert found == []


def test_a_rank_restarted_after_its_bye_raises_nothing_and_its_new_process_is_judged_alone():
    job = _job()
    groups: list[Sequence[Record]] = [*_steps(job, 10), _events(
        job, _bye(3, 10.2, "finished"), _ev(3, 10.3, "exited", exit_code=0))]
    # The launcher restarts it (a new pid), the job steps on; then the new process says
    # bye once more but its exit is lost, and a third process is killed.
    groups += [job.step(s, over={3: {"pid": 2003}}) for s in range(11, 16)]
    assert _run(groups + _samples(job, 18, 19)) == []
    groups += [_events(job, _ev(3, 16.0, "bye", reason="finished", pid=2003)),
               _events(job, _ev(3, 17.0, "exited", pid=3003, signal=9)),
               *_samples(job, 18, 19, 20)]
    found = _run(groups)
    assert [(f.check, f.ranks, f.evidence["pid"]) for f in found] == [("rank_exited", [3], 3003)]


def test_a_redelivered_exit_is_one_exit():
    job = _job()
    kill = _events(job, _ev(2, 10.5, "exited", signal=9))
    found = _run([*_steps(job, 10), kill, kill, *_samples(job, 12, 13, 14)])
    assert [(f.check, f.ranks) for f in found] == [("rank_exited", [2])]


# -- caps and the wire -----------------------------------------------------------------


def test_events_past_the_world_size_are_counted_and_dropped():
    job, stage = _job(), ConsistencyStage()
    forged = StepBatch(cluster="c1", node="node-00", job_id=job.job_id, ts=T0 + 10.5, seq=99,
                       agent_id="a", steps=[], events=[
                           _ev(r, 10.5, "exited", signal=9) for r in range(4, 1000)])
    _run([*_steps(job, 10), [forged]], stage)
    assert stage.stats()["rank_events_dropped"] == 996
    assert _run(_samples(job, 12, 13, 14), stage) == []


def test_a_flood_of_events_before_any_step_stays_within_the_cap():
    job, stage = _job(), ConsistencyStage(ConsistencyConfig(max_event_ranks=64))
    for i in range(5):
        batch = StepBatch(cluster="c1", node="node-00", job_id=job.job_id, ts=T0, seq=i,
                          agent_id="a", steps=[], events=[
                              RankEvent(rank=i * 1000 + r, ts=T0, event="stopped")
                              for r in range(1000)])
        stage.observe([batch])
    watch = stage.jobs[job.job_id].ranks
    assert len(watch.nodes) == 64 and len(watch.stopped) == 64
    assert stage.stats()["rank_events_dropped"] == 5000 - 64


def test_events_and_manifests_survive_the_wire():
    job = _job()
    [batch] = _events(job, _ev(2, 10.5, "exited", signal=9, exit_code=None))
    batch = replace(batch, manifests=(EnvManifest(rank=2, ts=T0, fingerprint="ab" * 32,
                                                  entries={"torch:optim/adamw.py": "cd" * 32}),))
    decoded = RecordDecoder(StepBatch).decode(encode(batch))
    assert decoded.events == batch.events and decoded.manifests == batch.manifests
