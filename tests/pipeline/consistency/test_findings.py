from trainguard.pipeline.consistency import Fault, FindingTracker, finding_id


def _fault(entities, step, ts=None, summary="s"):
    ts = 100.0 + step if ts is None else ts
    return Fault(check="rank_missing", category="availability", entities=tuple(entities),
                 summary=summary, first_seen=ts, ts=ts, step=step, ranks=tuple(entities))


def _tracker(**kw):
    args = {"clear_steps": 3, "repeat_s": 0.0, "max_open": 100} | kw
    return FindingTracker("c1", "job", **args)


def test_finding_ids_depend_on_job_check_culprits_and_first_step_only():
    a = finding_id("c1", "job", "lr_mismatch", (3, 1), "step=10")
    assert a == finding_id("c1", "job", "lr_mismatch", (1, 3), "step=10")
    assert a != finding_id("c1", "job", "lr_mismatch", (1, 3), "step=11")
    assert a != finding_id("c1", "job", "grad_norm_mismatch", (1, 3), "step=10")
    assert len(a) == 20


def test_a_new_culprit_beside_a_blamed_one_is_a_new_finding_and_nothing_else_is():
    t = _tracker()
    out = t.update("rank_missing", [_fault([9], 20)], {9})
    out += t.update("rank_missing", [_fault([9], 21)], {9})
    out += t.update("rank_missing", [_fault([9, 10], 22)], {9, 10})
    out += t.update("rank_missing", [_fault([9, 10], 23)], {9, 10})
    out += t.update("rank_missing", [_fault([9], 24)], {9, 10})  # 10 is back
    assert [(f.ranks, f.step) for f in out] == [([9], 20), ([9, 10], 22)]
    assert [f.ranks for f in t.open_findings()] == [[9, 10]]


def test_a_culprit_clear_for_clear_steps_is_forgotten_and_may_be_reported_again():
    t = _tracker()
    out = t.update("rank_missing", [_fault([4], 1)], {4})
    for _ in range(2, 4):
        out += t.update("rank_missing", [], {4})
    assert t.is_blamed("rank_missing", 4)  # two clear evaluations of three
    out += t.update("rank_missing", [], {4})
    assert not t.is_blamed("rank_missing", 4) and t.open_findings() == []
    out += t.update("rank_missing", [_fault([4], 9)], {4})
    assert [f.step for f in out] == [1, 9]


def test_evaluations_that_did_not_cover_a_culprit_do_not_clear_it():
    t = _tracker()
    t.update("rank_missing", [_fault([4], 1)], {4})
    for _ in range(10):
        t.update("rank_missing", [], {5, 6})
        t.update("rank_missing", [], None)
    assert t.is_blamed("rank_missing", 4)


def test_a_persisting_fault_is_re_emitted_with_its_id_and_first_seen():
    t = _tracker(repeat_s=60.0)
    out = []
    for step in range(0, 130):
        out += t.update("rank_missing", [_fault([2], step, summary=f"at {step}")], {2})
    assert [f.last_seen for f in out] == [100.0, 160.0, 220.0]
    assert {f.ts for f in out} == {100.0}  # the decision time stays the first one
    assert {f.finding_id for f in out} == {out[0].finding_id}
    assert {f.first_seen for f in out} == {100.0} and out[-1].summary == "at 120"
