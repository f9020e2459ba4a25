"""Change approvals in the alert lifecycle: an approved change is info, before or after it paged."""

from __future__ import annotations

from typing import Any

from tests.pipeline.alerts.test_lifecycle import T0, finding
from tests.pipeline.alerts.test_stream import Store
from tests.pipeline.fakes import Clock, FakeTopic, events, run
from trainguard.pipeline.alerts import AlertLifecycle, AlertLifecycleConfig
from trainguard.pipeline.alerts.alert_job import AlertJob
from trainguard.pipeline.alerts.approvals import Approval, approval_for
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert, Finding

NEW = "9f3a1c0e52d1b7a4"


def changed(t: float = T0, **kw: Any) -> Finding:
    """A job-wide ``code_changed`` finding: no rank, no node, the new fingerprint."""
    fields: dict[str, Any] = dict(
        finding_id="f-code", check="code_changed", ranks=[], nodes=[], observed=NEW,
        expected="0123456789abcdef", step=101,
        summary="the job's env fingerprint changed across the restart at step 101",
        evidence={"previous": "0123456789abcdef", "now": NEW, "fingerprint": NEW})
    fields.update(kw)
    return finding(t, **fields)


def approval(fingerprint: str = NEW, job_id: str = "job-1", **kw: Any) -> Approval:
    fields: dict[str, Any] = dict(approval_id="apr-0000beef", job_id=job_id,
                                  fingerprint=fingerprint, reason="release 2.3, CHG-118",
                                  created_by="alice", created_at=T0 - 60)
    fields.update(kw)
    return Approval(**fields)


def test_an_unapproved_change_pages():
    [alert] = AlertLifecycle().observe_findings([changed()])
    assert (alert.status, alert.severity) == ("firing", "page")
    assert "approved" not in alert.labels


def test_a_change_approved_ahead_of_time_is_info_labelled_with_the_approval():
    lc = AlertLifecycle()
    assert lc.set_approvals([approval()], T0) == []
    [alert] = lc.observe_findings([changed()])
    assert (alert.status, alert.severity) == ("firing", "info")
    assert alert.labels["approved"] == "apr-0000beef" and alert.labels["severity"] == "info"


def test_an_approval_after_the_page_resolves_it_and_later_repeats_are_info():
    lc = AlertLifecycle()
    [page] = lc.observe_findings([changed()])
    [resolved] = lc.set_approvals([approval()], T0 + 30)
    assert (resolved.alert_id, resolved.status, resolved.ends_at) == (
        page.alert_id, "resolved", T0 + 30)
    assert resolved.labels["approved"] == "apr-0000beef"
    assert lc.observe_findings([changed(T0 + 20, last_seen=T0 + 20)]) == []  # inside it
    [again] = lc.observe_findings([changed(T0 + 60, last_seen=T0 + 60)])
    assert (again.status, again.severity) == ("firing", "info")
    assert "flapping" not in again.labels and again.alert_id != page.alert_id


def test_an_approval_of_another_job_fingerprint_check_or_a_revoked_one_does_not_apply():
    for other in (approval(job_id="job-2"), approval(fingerprint="ffff0000ffff0000"),
                  approval(revoked=True)):
        lc = AlertLifecycle()
        lc.set_approvals([other], T0)
        [alert] = lc.observe_findings([changed()])
        assert alert.severity == "page", other
    lc = AlertLifecycle()
    lc.set_approvals([approval()], T0)
    [alert] = lc.observe_findings([finding(evidence={"fingerprint": NEW})])
    assert alert.severity == "page"  # param_divergence is never approvable


def test_a_seed_change_of_several_groups_needs_every_new_fingerprint_approved():
    evidence = {"quantity": "seed", "fingerprint": "s-a,s-b"}
    assert approval_for([approval("s-a")], "job-1", "restart_divergence", evidence) is None
    found = approval_for([approval("s-a"), approval("s-b", approval_id="apr-0000cafe")],
                         "job-1", "restart_divergence", evidence)
    assert found is not None and found.fingerprint == "s-a"
    assert approval_for([approval()], "job-1", "restart_divergence", {"quantity": "lr"}) is None


def test_the_alert_job_reads_approvals_and_publishes_the_resolve():
    class Approvals(Store):
        def __init__(self) -> None:
            super().__init__()
            self.approvals: list[Approval] = []

        async def read_approvals(self, now: float) -> list[Approval]:
            return self.approvals

    async def main() -> None:
        store, alerts = Approvals(), FakeTopic()
        pub = Publisher("w", dead_letters=FakeTopic(), alerts=alerts)
        job = AlertJob(AlertLifecycleConfig(), pub, store.write, findings_topic="findings",
                       partitions=1, read_open=store.read_open,
                       read_silences=store.read_silences, clock=Clock(T0 + 5),
                       read_approvals=store.read_approvals)
        await job.handle(events("findings", [0], values=[encode(changed())]))
        store.approvals.append(approval())
        await job.refresh_approvals()
        sent = [RecordDecoder(Alert).decode(s.value) for s in alerts.sent]
        assert [(a.status, a.severity) for a in sent] == [("firing", "page"),
                                                          ("resolved", "page")]
        assert sent[1].labels["approved"] == "apr-0000beef" and job.firing() == 0

    run(main())
