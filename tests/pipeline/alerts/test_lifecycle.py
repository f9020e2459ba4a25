from __future__ import annotations

from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import AlertLifecycle, AlertLifecycleConfig, Silence
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert, Finding

T0 = 1_700_000_000.0


def finding(t: float = T0, **kw: Any) -> Finding:
    fields: dict[str, Any] = dict(
        finding_id="f-1", cluster="c1", job_id="job-1", check="param_divergence",
        category="integrity", first_seen=t, ts=t, last_seen=t, step=100, ranks=[6],
        nodes=["node-00"], observed="94ebc174", expected="e4c24a2f", score=1.0,
        summary="rank 6 on node-00: param checksum differs from its 31 replicas'.",
        evidence={"replicas": 31.0}, check_version="1",
    )
    fields.update(kw)
    return Finding(**fields)


def test_new_integrity_finding_fires_one_page() -> None:
    out = AlertLifecycle().observe_findings([finding()])
    assert len(out) == 1
    alert = out[0]
    assert (alert.status, alert.severity, alert.ts, alert.starts_at) == ("firing", "page", T0, T0)
    assert alert.labels["check"] == "param_divergence"
    assert alert.labels["job_id"] == "job-1" and alert.labels["node"] == "node-00"
    assert alert.labels["severity"] == "page" and alert.rank == 6
    assert alert.evidence["finding_id"] == "f-1" and alert.evidence["observed"] == "94ebc174"
    assert alert.runbook_url == "https://trainguard.example/runbooks/param_divergence"
    assert alert.dashboard_url is None


def test_repeats_of_a_finding_refresh_without_new_emission() -> None:
    lc = AlertLifecycle()
    lc.observe_findings([finding()])
    assert lc.observe_findings([finding(ts=T0, last_seen=T0 + 60)]) == []
    assert lc.observe_findings([finding(finding_id="f-2", last_seen=T0 + 100)]) == []
    assert lc.tick(T0 + 200) == []  # last seen at +100: not quiet for 120 s yet
    [open_alert] = lc.open_alerts()
    assert open_alert.evidence["last_seen"] == T0 + 100


def test_quiet_alert_resolves_once_with_ends_at() -> None:
    lc = AlertLifecycle()
    [fired] = lc.observe_findings([finding()])
    lc.observe_findings([finding(last_seen=T0 + 30)])
    assert lc.tick(T0 + 149) == []
    [resolved] = lc.tick(T0 + 151)
    assert resolved.status == "resolved" and resolved.alert_id == fired.alert_id
    assert resolved.ends_at == resolved.ts == T0 + 30 + 120
    assert lc.tick(T0 + 500) == [] and lc.open_alerts() == []


def test_resolution_does_not_depend_on_ticks() -> None:
    lc = AlertLifecycle()
    lc.observe_findings([finding()])
    out = lc.observe_findings([finding(last_seen=T0 + 400)])  # no tick in between
    assert [a.status for a in out] == ["resolved", "firing"]
    assert out[0].ends_at == T0 + 120 and out[1].starts_at == T0 + 400


@pytest.mark.parametrize("max_flaps", [1, 3])
def test_flapping_finding_pages_at_most_max_flaps_times(max_flaps: int) -> None:
    cfg = AlertLifecycleConfig(max_flaps=max_flaps)
    lc = AlertLifecycle(cfg)
    out: list[Alert] = []
    for i in range(5):  # fire, go quiet, resolve: five times in about ten minutes
        t = T0 + i * 130
        out += lc.observe_findings([finding(t)])
        out += lc.tick(t + 121)
    pages = [a for a in out if a.status == "firing" and a.severity == "page"]
    assert len(pages) == max_flaps
    assert all("flapping" not in a.labels for a in pages)
    # Then it comes back once as a ticket saying it flaps, held firing while it does...
    [flapping] = [a for a in out if a.labels.get("flapping") == "true"]
    assert (flapping.status, flapping.severity) == ("firing", "ticket")
    assert len(lc.open_alerts()) == 1
    # ...and resolves once quiet for the flap window.
    [final] = lc.tick(T0 + 4 * 130 + cfg.flap_window_s)
    assert final.status == "resolved" and final.labels["flapping"] == "true"


def missing(t: float, rank: int, **kw: Any) -> Finding:
    """An availability finding: ``rank`` (alone on its node) stopped reporting."""
    fields: dict[str, Any] = dict(check="rank_missing", category="availability",
                                  finding_id=f"f-miss-{rank}", ranks=[rank], nodes=[f"node-{rank}"])
    fields.update(kw)
    return finding(t, **fields)


def test_job_rate_limit_turns_sixth_page_into_ticket() -> None:
    lc = AlertLifecycle()
    out: list[Alert] = []
    for r in range(6):
        out += lc.observe_findings([missing(T0 + r, r)])
    assert [a.severity for a in out] == ["page"] * 5 + ["ticket"]
    assert out[-1].labels["rate_limited"] == "true"
    assert all("rate_limited" not in a.labels for a in out[:5])
    # Another job has its own budget, and the window moves on.
    [other] = lc.observe_findings([missing(T0 + 10, 1, job_id="job-2")])
    assert other.severity == "page"
    lc.tick(T0 + 400)
    [later] = lc.observe_findings([missing(T0 + 400, 7)])
    assert later.severity == "page"


def test_an_integrity_finding_pages_even_past_the_jobs_rate_limit() -> None:
    lc = AlertLifecycle()
    for r in range(5):
        lc.observe_findings([missing(T0 + r, r)])
    [tamper] = lc.observe_findings([finding(T0 + 6, ranks=[9], nodes=["node-9"])])
    assert tamper.severity == "page" and "rate_limited" not in tamper.labels


def test_integrity_pages_do_not_use_up_the_jobs_rate_limit() -> None:
    lc = AlertLifecycle()
    pages = []
    for r in range(6):
        pages += lc.observe_findings([finding(T0 + r, finding_id=f"f-{r}", ranks=[r],
                                              nodes=[f"node-{r}"])])
    [lost] = lc.observe_findings([missing(T0 + 7, 20)])
    assert [a.severity for a in pages] == ["page"] * 6
    assert lost.severity == "page" and "rate_limited" not in lost.labels


def test_an_integrity_finding_on_a_node_already_paged_for_is_a_page_of_its_own() -> None:
    # Whoever can make the culprit's node look idle first must not mute the tampering.
    lc = AlertLifecycle()
    [idle] = lc.observe_findings([finding(check="node_idle", category="availability",
                                          finding_id="f-idle")])
    [tamper] = lc.observe_findings([finding(T0 + 3, finding_id="f-div")])
    [clash] = lc.observe_findings([finding(T0 + 4, check="conflicting_report",
                                           finding_id="f-clash", nodes=["node-00", "node-01"])])
    assert idle.severity == "page"
    assert tamper.severity == "page" and "related_to" not in tamper.labels
    assert clash.severity == "page" and "related_to" not in clash.labels


def test_silence_for_the_job_turns_alert_into_info() -> None:
    lc = AlertLifecycle()
    lc.set_silences([Silence("s-42", "job-1", None, T0 - 60, T0 + 3600, "rebalance", "sre")])
    [alert] = lc.observe_findings([finding(check="node_idle", category="hardware")])
    assert alert.severity == "info" and alert.labels["silenced"] == "s-42"
    [resolved] = lc.tick(T0 + 200)  # still recorded through its lifecycle
    assert resolved.labels["silenced"] == "s-42"


def test_silence_matches_job_node_and_time() -> None:
    s = Silence("s-1", None, "node-00", T0, T0 + 10, "reboot", "sre")
    assert s.matches("any-job", "node-00", T0)
    assert not s.matches("any-job", "node-01", T0)
    assert not s.matches("any-job", "node-00", T0 + 10)
    with pytest.raises(ConfigError, match="neither job_id nor node"):
        Silence("s-2", None, None, T0, T0 + 10, "x", "sre")


def test_hardware_finding_is_a_ticket() -> None:
    [alert] = AlertLifecycle().observe_findings([finding(category="hardware", check="xid")])
    assert alert.severity == "ticket" and alert.labels["category"] == "hardware"


def test_availability_without_culprits_is_a_ticket_with_them_a_page() -> None:
    lc = AlertLifecycle()
    [job] = lc.observe_findings([finding(category="availability", ranks=[], nodes=[])])
    [rank] = lc.observe_findings([finding(category="availability", check="stall")])
    assert (job.severity, rank.severity) == ("ticket", "page")


def test_integrity_finding_blaming_many_ranks_is_job_wide() -> None:
    lc = AlertLifecycle()
    [wide] = lc.observe_findings([finding(ranks=list(range(10)), evidence={"world_size": 32.0})])
    [narrow] = lc.observe_findings([finding(ranks=list(range(8)), check="loss_divergence")])
    assert wide.severity == "page" and wide.labels["scope"] == "job-wide"
    assert "scope" not in narrow.labels


def test_fingerprint_stable_across_episodes_alert_id_differs() -> None:
    lc = AlertLifecycle()
    [first] = lc.observe_findings([finding()])
    lc.tick(T0 + 200)
    [second] = lc.observe_findings([finding(T0 + 300, finding_id="f-later", step=900)])
    assert first.fingerprint == second.fingerprint
    assert first.alert_id != second.alert_id


def test_dashboard_link_covers_first_and_last_seen() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(dashboard_base_url="https://grafana.example/"))
    [alert] = lc.observe_findings([finding()])
    assert alert.dashboard_url == (
        "https://grafana.example/d/trainguard-job?var-job=job-1&var-node=node-00"
        f"&from={round((T0 - 300) * 1000)}&to={round((T0 + 300) * 1000)}"
    )


def test_open_alerts_are_bounded_and_evictions_counted() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(max_alerts=3))
    for r in range(5):
        lc.observe_findings([finding(T0, category="hardware", ranks=[r], nodes=[])])
    assert len(lc.open_alerts()) == 3 and lc.evicted == 2


def test_resolved_alerts_are_forgotten_after_flap_window() -> None:
    lc = AlertLifecycle()
    lc.observe_findings([finding()])
    lc.tick(T0 + 120)
    assert lc._alerts
    lc.tick(T0 + 120 + 600)
    assert not lc._alerts


def test_emitted_alerts_survive_the_wire_round_trip() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(dashboard_base_url="https://grafana.example"))
    out = lc.observe_findings([finding(), finding(category="hardware", ranks=[], nodes=[])])
    out += lc.tick(T0 + 1000)
    assert len(out) == 4
    decoder = RecordDecoder(Alert)
    for alert in out:
        assert decoder.decode(encode(alert)) == alert


@pytest.mark.parametrize(
    ("field", "value"),
    [("resolve_after_s", 0.0), ("max_flaps", 0), ("job_rate_limit", -1),
     ("flap_window_s", float("nan")), ("dashboard_base_url", "grafana")],
)
def test_bad_config_is_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        AlertLifecycleConfig(**{field: value})  # type: ignore[arg-type]


def test_a_cleared_finding_resolves_its_alert_after_the_clear_hold() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(clear_hold_s=30.0))
    [fired] = lc.observe_findings([finding()])
    assert lc.observe_findings([finding(last_seen=T0 + 5, cleared_at=T0 + 25)]) == []
    assert lc.tick(T0 + 54) == []  # still inside the hold
    [resolved] = lc.tick(T0 + 55)
    assert (resolved.status, resolved.alert_id, resolved.ends_at) == (
        "resolved", fired.alert_id, T0 + 25)


def test_a_fault_returning_during_the_clear_hold_stays_one_episode() -> None:
    lc = AlertLifecycle(AlertLifecycleConfig(clear_hold_s=30.0))
    pages = lc.observe_findings([finding()])
    for cycle in range(10):  # flickers: clears, comes back 20 s later, ten times
        t = T0 + cycle * 40
        pages += lc.observe_findings([finding(last_seen=t + 10, cleared_at=t + 20)])
        pages += lc.tick(t + 39)
        pages += lc.observe_findings([finding(finding_id=f"f-{cycle}", ts=t + 40,
                                              first_seen=t + 40, last_seen=t + 40)])
    assert [a.status for a in pages] == ["firing"]


def test_restore_keeps_a_restarted_worker_from_paging_again() -> None:
    before = AlertLifecycle()
    [fired] = before.observe_findings([finding()])
    after = AlertLifecycle()
    assert after.restore([fired]) == 1
    assert after.observe_findings([finding(last_seen=T0 + 60)]) == []  # a repeat, not new
    [resolved] = after.tick(T0 + 60 + 120)
    assert (resolved.alert_id, resolved.status) == (fired.alert_id, "resolved")


def test_a_second_check_on_the_same_node_is_a_related_ticket_not_a_second_page() -> None:
    lc = AlertLifecycle()
    [idle] = lc.observe_findings([finding(check="node_idle", category="availability",
                                          finding_id="f-idle")])
    [missing] = lc.observe_findings([finding(check="rank_missing", category="availability",
                                             finding_id="f-miss", ts=T0 + 3, last_seen=T0 + 3)])
    assert idle.severity == "page"
    assert missing.severity == "ticket" and missing.labels["related_to"] == idle.alert_id
    # Another node of the job is another incident: it pages.
    [other] = lc.observe_findings([finding(check="rank_missing", category="availability",
                                           finding_id="f-3", nodes=["node-07"], ranks=[60])])
    assert other.severity == "page" and "related_to" not in other.labels


def test_a_lost_gpu_pages_and_a_throttled_one_is_a_ticket() -> None:
    lc = AlertLifecycle()
    [lost] = lc.observe_findings([finding(check="node_idle", category="hardware",
                                          finding_id="f-lost")])
    [hot] = lc.observe_findings([finding(check="gpu_throttled", category="hardware",
                                         finding_id="f-hot", nodes=["node-05"], ranks=[41])])
    assert (lost.severity, hot.severity) == ("page", "ticket")


def test_runbook_links_follow_a_template_when_the_base_has_one() -> None:
    base = "https://git.example/tg/blob/main/docs/runbooks/{check}.md"
    [a] = AlertLifecycle(AlertLifecycleConfig(runbook_base_url=base)).observe_findings([finding()])
    assert a.runbook_url == "https://git.example/tg/blob/main/docs/runbooks/param_divergence.md"


def test_an_integrity_finding_over_a_quarter_of_the_world_is_job_wide() -> None:
    lc = AlertLifecycle()
    [few] = lc.observe_findings([finding(ranks=[1, 2, 3], evidence={"world_size": 16})])
    [many] = lc.observe_findings([finding(finding_id="f-9", check="loss_outlier",
                                          ranks=[1, 2, 3, 4, 5], evidence={"world_size": 16})])
    assert "scope" not in few.labels and many.labels["scope"] == "job-wide"


def test_job_wide_findings_on_different_series_are_different_alerts() -> None:
    # A job-wide slowdown (a ticket) firing first must not absorb a loss shift's page.
    lc = AlertLifecycle()
    [slow] = lc.observe_findings([finding(
        finding_id="f-slow", check="job_shift", category="availability", ranks=[], nodes=[],
        evidence={"metric": "step_time"})])
    [loss] = lc.observe_findings([finding(
        T0 + 30, finding_id="f-loss", check="job_shift", ranks=[], nodes=[],
        evidence={"metric": "loss"})])
    assert (slow.severity, loss.severity) == ("ticket", "page")
    assert slow.fingerprint != loss.fingerprint


def test_a_finding_that_names_the_job_and_nobody_in_it_is_job_wide() -> None:
    [a] = AlertLifecycle().observe_findings([finding(check="job_shift", ranks=[], nodes=[])])
    assert a.severity == "page" and a.labels["scope"] == "job-wide" and a.node is None


def test_a_finding_at_an_absurd_event_time_fires_without_overflow() -> None:
    # Regression (#13 fuzz): ts = 1e308 is a valid EpochSeconds; ts * 1000 is inf, and
    # round(inf) raised OverflowError out of the lifecycle.
    config = AlertLifecycleConfig(dashboard_base_url="https://grafana.example")
    [alert] = AlertLifecycle(config).observe_findings([finding(t=1e308)])
    assert alert.status == "firing" and alert.alert_id.endswith("-inf")
    assert alert.dashboard_url is not None and "to=inf" in alert.dashboard_url
    assert AlertLifecycle().observe_findings([finding()])[0].alert_id.endswith(
        f"-{round(T0 * 1000)}")
