"""The alert lifecycle: findings in, alert state changes out, in event time.

One alert per *fingerprint* (cluster, job or node, check, blamed entity): the
stable identity receivers such as Alertmanager and PagerDuty dedup on. Each firing
*episode* has its own ``alert_id`` (fingerprint and start). Only transitions are emitted:
firing (new), resolved (quiet for ``resolve_after_s``, ``ends_at`` set) and firing again
after a resolve. Repeats of a persisting finding only refresh the alert's last-seen time.
Baseline anomalies (:meth:`AlertLifecycle.observe_anomalies`) go through the same
lifecycle as tickets (:mod:`~trainguard.pipeline.alerts.anomalies`), held open for
``anomaly_resolve_after_s`` since an anomaly is reported once, not repeated.

Noise control, in the order applied to a new episode:

* flapping: an alert that already fired ``max_flaps`` times within ``flap_window_s``
  fires again as a ``ticket`` labelled ``flapping="true"`` (on-call learns it came back,
  nobody is woken again) and is *held* firing until quiet for ``flap_window_s``;
* approvals: a ``code_changed`` (or seed ``restart_divergence``) finding whose
  fingerprint is approved for its job (``trainguard change approve``) is severity
  ``info`` with ``approved=<approval_id>``; an approval that arrives while such an alert
  fires resolves that episode (:meth:`AlertLifecycle.set_approvals`), and the finding's
  next repeat is recorded as ``info``;
* silences: planned work turns the episode into severity ``info`` with
  ``silenced=<silence_id>``; it is still emitted so that the store keeps the record.
  Integrity findings are muted only by a silence marked ``integrity`` that has a reason,
  a creator and lasts at most ``max_integrity_silence_s``;
* one page per incident: a page-worthy episode blaming a node that a firing page of the
  same job already blames becomes a ``ticket`` labelled ``related_to=<that alert_id>``;
* rate limit: beyond ``job_rate_limit`` new pages per job per ``job_rate_window_s`` an
  episode is created as a ``ticket`` labelled ``rate_limited="true"``.

Integrity findings page on their own: the last two never apply to them and they do not
count towards the rate limit (only availability and hardware pages do), so no page raised
first, by a fault or on purpose, can turn the evidence of sabotage into a ticket.

Every time is taken from the records (event time), never from a clock, so a replay of
the same input gives the same alerts with the same ids.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from trainguard.pipeline.alerts.anomalies import ANOMALY_CATEGORY, alertable, from_anomaly
from trainguard.pipeline.alerts.approvals import Approval, approval_for
from trainguard.pipeline.alerts.config import (
    AlertLifecycleConfig,
    Silence,
    integrity_silence_violation,
)
from trainguard.pipeline.alerts.observations import (
    Observation,
    Severity,
    finding_fingerprint,
    from_finding,
)
from trainguard.schemas.records import Alert, Anomaly, Finding

__all__ = ["AlertLifecycle", "finding_fingerprint"]

log = logging.getLogger(__name__)

#: The dashboard link shows this much time before first-seen and after last-seen, so the
#: healthy behaviour around the fault is on screen too.
DASHBOARD_MARGIN_S = 300.0


@dataclass(slots=True)
class _State:
    """One fingerprint's current episode (firing or resolved) and its firing history."""

    obs: Observation
    alert_id: str
    severity: Severity
    labels: dict[str, str]
    starts_at: float
    last_seen: float
    #: Starts of the latest firings, to tell flapping (at most ``max_flaps`` kept).
    fires: deque[float]
    status: Literal["firing", "resolved"] = "firing"
    ends_at: float | None = None
    #: A flap-suppressed episode: fired as a ticket, held firing for ``flap_window_s``.
    held: bool = False
    #: Event time its finding reported cleared; it resolves ``clear_hold_s`` later unless
    #: it fires again in between (then the episode simply goes on: no second page).
    cleared_at: float | None = None


class AlertLifecycle:
    """Every alert's state, fed with findings; returns the changes to publish.

    Not thread-safe; one instance per worker partition, fed in event-time order (late
    records are tolerated: they refresh, or are ignored when their episode is over).
    """

    def __init__(self, config: AlertLifecycleConfig | None = None) -> None:
        self.config = config if config is not None else AlertLifecycleConfig()
        self._alerts: dict[str, _State] = {}
        self._silences: tuple[Silence, ...] = ()
        self._approvals: tuple[Approval, ...] = ()
        #: Start times of recent new pages, per (cluster, job or node).
        self._pages: dict[tuple[str, str], deque[float]] = {}
        #: Alerts forgotten because ``max_alerts`` was reached (a counter for metrics).
        self.evicted = 0

    # -- input -----------------------------------------------------------------------------

    def observe_findings(self, findings: Sequence[Finding]) -> list[Alert]:
        """Take consistency findings; return the alert state changes to publish."""
        out: list[Alert] = []
        for finding in findings:
            out.extend(self._observe(from_finding(finding)))
        return out

    def observe_anomalies(self, anomalies: Sequence[Anomaly]) -> list[Alert]:
        """Take baseline anomalies (those of ``anomaly_patterns``): tickets at most."""
        out: list[Alert] = []
        for anomaly in anomalies:
            if alertable(anomaly, self.config.anomaly_patterns):
                out.extend(self._observe(from_anomaly(anomaly)))
        return out

    def tick(self, now: float | Callable[[str], float]) -> list[Alert]:
        """Advance event time to ``now``: resolve what went quiet, forget what is old.

        ``now`` may be a function of the job (``job_id``, else the cluster): each job's
        alerts then run on that job's own time, which no other job's records can move.
        """
        at: Callable[[str], float] = now if callable(now) else _constant(now)
        out: list[Alert] = []
        for fp, state in list(self._alerts.items()):
            t = at(state.obs.job_id or state.obs.cluster)
            if state.status == "firing" and self._over(state, t):
                out.append(self._resolve(state))
            elif (
                state.status == "resolved" and state.ends_at is not None
                and t - state.ends_at >= self.config.flap_window_s
            ):
                # Past the flap window a resolved alert can no longer count as flapping;
                # its fingerprint is a hash, so a later episode gets the same one anyway.
                del self._alerts[fp]
        window = self.config.job_rate_window_s
        for key, starts in list(self._pages.items()):
            t = at(key[1])
            while starts and t - starts[0] >= window:
                starts.popleft()
            if not starts:
                del self._pages[key]
        out.sort(key=lambda a: (a.ts, a.fingerprint))
        return out

    def restore(self, alerts: Sequence[Alert]) -> int:
        """Take back the firing alerts a previous run left open (from the store).

        Without this a restarted worker would page again for faults already paged: the
        findings it re-reads would look new. Returns how many were restored.
        """
        n = 0
        for alert in alerts:
            if alert.status != "firing" or alert.fingerprint in self._alerts:
                continue
            ev = alert.evidence
            last = ev.get("last_seen")
            first = ev.get("first_seen")
            last_seen = float(last) if isinstance(last, int | float) else alert.starts_at
            obs = Observation(
                fingerprint=alert.fingerprint, cluster=alert.cluster, check=alert.check,
                severity=alert.severity, job_id=alert.job_id, node=alert.node,
                nodes=(alert.node,) if alert.node is not None else (), rank=alert.rank,
                gpu_index=alert.gpu_index, summary=alert.summary, evidence=dict(ev),
                labels={k: v for k, v in alert.labels.items() if k != "severity"},
                first_seen=float(first) if isinstance(first, int | float) else alert.starts_at,
                seen=last_seen,
            )
            self._alerts[alert.fingerprint] = _State(
                obs=obs, alert_id=alert.alert_id, severity=alert.severity,
                labels=dict(alert.labels), starts_at=alert.starts_at, last_seen=last_seen,
                fires=deque([alert.starts_at], maxlen=self.config.max_flaps),
                held=alert.labels.get("flapping") == "true",
            )
            n += 1
        return n

    def set_silences(self, silences: Sequence[Silence]) -> None:
        """Replace the active silences; they apply to episodes that start from now on."""
        self._silences = tuple(silences)

    def set_approvals(self, approvals: Sequence[Approval],
                      now: float | Callable[[str], float]) -> list[Alert]:
        """Replace the change approvals; resolve the firing alerts they now sanction.

        New episodes of an approved finding are ``info`` from then on; one that already
        paged ends at ``now`` (its job's time), its resolved record labelled
        ``approved=<approval_id>`` (delivery sends the resolve where the page went).
        """
        self._approvals = tuple(approvals)
        at: Callable[[str], float] = now if callable(now) else _constant(now)
        out: list[Alert] = []
        for state in self._alerts.values():
            if state.status != "firing" or state.severity == "info":
                continue
            approval = self._approval_for(state.obs)
            if approval is None:
                continue
            state.labels["approved"] = approval.approval_id
            state.status = "resolved"
            state.ends_at = max(state.starts_at, at(state.obs.job_id or state.obs.cluster))
            out.append(self._record(state))
        return out

    def _approval_for(self, obs: Observation) -> Approval | None:
        if not self._approvals:
            return None
        return approval_for(self._approvals, obs.job_id, obs.check, obs.evidence)

    def open_alerts(self) -> list[Alert]:
        """The alerts firing now (held flapping ones included), oldest activity first."""
        return [self._record(s) for s in self._alerts.values() if s.status == "firing"]

    # -- transitions -----------------------------------------------------------------------

    def _observe(self, obs: Observation) -> list[Alert]:
        out: list[Alert] = []
        state = self._alerts.get(obs.fingerprint)
        if obs.cleared:
            # Only a firing episode can clear; a held (flapping) one waits out its window.
            if state is not None and state.status == "firing" and not state.held:
                if state.cleared_at is None or obs.seen < state.cleared_at:
                    state.cleared_at = max(obs.seen, state.last_seen)
            return out
        if state is not None:
            if state.status == "firing":
                if not self._over(state, obs.seen):
                    state.cleared_at = None  # it came back while clearing: same episode
                    self._refresh(state, obs)
                    return out
                # It went quiet before this observation and no tick came in between:
                # close that episode first so that the result does not depend on ticks.
                out.append(self._resolve(state))
            elif state.ends_at is not None and obs.seen < state.ends_at:
                return out  # a late repeat from inside the episode that is already over
        out.append(self._fire(obs, state))
        return out

    def _refresh(self, state: _State, obs: Observation) -> None:
        if obs.seen >= state.last_seen:
            state.last_seen = obs.seen
            state.obs = obs  # the latest evidence; the episode's severity and labels stay
        # Most recently active last, so that eviction takes the stalest alert.
        self._alerts[obs.fingerprint] = self._alerts.pop(obs.fingerprint)

    def _fire(self, obs: Observation, previous: _State | None) -> Alert:
        cfg = self.config
        start = obs.seen
        fires = previous.fires if previous is not None else deque(maxlen=cfg.max_flaps)
        while fires and start - fires[0] >= cfg.flap_window_s:
            fires.popleft()
        approval = self._approval_for(obs)
        # An approved change is a record, not an alarm: it is never held as flapping.
        held = len(fires) >= cfg.max_flaps and approval is None
        fires.append(start)
        severity: Severity = obs.severity
        labels = dict(obs.labels)
        silence = self._silence_for(obs, start)
        if held:
            labels["flapping"] = "true"
        # Integrity pages stand alone: neither demoted by a related page nor rate limited.
        limited = severity == "page" and not held and not obs.pages_alone
        lead = self._paging_for(obs) if limited else None
        if approval is not None:
            severity = "info"
            labels["approved"] = approval.approval_id
        elif silence is not None:
            severity = "info"
            labels["silenced"] = silence.silence_id
        elif lead is not None:
            # One fault trips several checks (a killed rank: its GPU idles, its steps go
            # missing): the first page stands for the incident, the rest are tickets.
            severity = "ticket"
            labels["related_to"] = lead.alert_id
        elif held:
            severity = "ticket" if severity == "page" else severity
        elif limited and self._over_rate(obs, start):
            severity = "ticket"
            labels["rate_limited"] = "true"
        labels["severity"] = severity
        state = _State(
            obs=obs, alert_id=f"{obs.fingerprint}-{_millis(start)}", severity=severity,
            labels=labels, starts_at=start, last_seen=start, fires=fires, held=held,
        )
        self._alerts.pop(obs.fingerprint, None)
        self._alerts[obs.fingerprint] = state
        while len(self._alerts) > cfg.max_alerts:
            self._evict_oldest()
        return self._record(state)

    def _over(self, state: _State, now: float) -> bool:
        """The firing episode is over at event time ``now`` (cleared and held, or quiet)."""
        if state.cleared_at is not None and now - state.cleared_at >= self.config.clear_hold_s:
            return True
        return now - state.last_seen >= self._hold(state)

    def _resolve(self, state: _State) -> Alert:
        state.status = "resolved"
        # From the data, not from when the tick came: a replay gives the same ``ends_at``.
        quiet = state.last_seen + self._hold(state)
        state.ends_at = min(quiet, state.cleared_at) if state.cleared_at is not None else quiet
        return self._record(state)

    def _hold(self, state: _State) -> float:
        cfg = self.config
        quiet = cfg.resolve_after_s
        if state.obs.labels.get("category") == ANOMALY_CATEGORY:
            quiet = max(quiet, cfg.anomaly_resolve_after_s)  # one event, never repeated
        return max(quiet, cfg.flap_window_s) if state.held else quiet

    def _silence_for(self, obs: Observation, ts: float) -> Silence | None:
        nodes: tuple[str | None, ...] = obs.nodes or (None,)
        fields = {
            "check": obs.check, "cluster": obs.cluster,
            "category": obs.labels.get("category", ""),
            "rank": str(obs.rank) if obs.rank is not None else "",
            "gpu": str(obs.gpu_index) if obs.gpu_index is not None else "",
        }
        for silence in self._silences:
            if obs.pages_alone and not self._mutes_integrity(silence):
                continue
            if any(silence.matches(obs.job_id, node, ts, fields) for node in nodes):
                return silence
        return None

    def _mutes_integrity(self, silence: Silence) -> bool:
        """Only an integrity silence that keeps the rule mutes integrity findings.

        :class:`~trainguard.pipeline.alerts.alert_job.AlertJob` logs and counts the ones
        that break it; this check stands even for silences set by other callers.
        """
        limit = self.config.max_integrity_silence_s
        return silence.integrity and integrity_silence_violation(silence, limit) is None

    def _paging_for(self, obs: Observation) -> _State | None:
        """A firing page of the same job (or node) that blames one of ``obs``'s nodes."""
        if not obs.nodes:
            return None
        blamed = set(obs.nodes)
        for state in self._alerts.values():
            o = state.obs
            if (state.status == "firing" and state.severity == "page" and not state.held
                    and o.cluster == obs.cluster and o.job_id == obs.job_id
                    and o.fingerprint != obs.fingerprint and blamed.intersection(o.nodes)):
                return state
        return None

    def _over_rate(self, obs: Observation, start: float) -> bool:
        key = (obs.cluster, obs.job_id if obs.job_id is not None else f"node={obs.node}")
        starts = self._pages.setdefault(key, deque())
        while starts and start - starts[0] >= self.config.job_rate_window_s:
            starts.popleft()
        if len(starts) >= self.config.job_rate_limit:
            return True
        starts.append(start)
        return False

    def _evict_oldest(self) -> None:
        fp = next(iter(self._alerts))
        state = self._alerts.pop(fp)
        self.evicted += 1
        log.warning(
            "alert evicted: max_alerts=%d reached fingerprint=%s status=%s evicted=%d",
            self.config.max_alerts, fp, state.status, self.evicted,
        )

    # -- records ---------------------------------------------------------------------------

    def _record(self, state: _State) -> Alert:
        obs = state.obs
        evidence = dict(obs.evidence)
        evidence.update(first_seen=obs.first_seen, last_seen=state.last_seen)
        resolved = state.status == "resolved"
        return Alert(
            alert_id=state.alert_id, fingerprint=obs.fingerprint, status=state.status,
            severity=state.severity, check=obs.check, summary=obs.summary, cluster=obs.cluster,
            ts=state.ends_at if resolved and state.ends_at is not None else state.starts_at,
            starts_at=state.starts_at, ends_at=state.ends_at if resolved else None,
            job_id=obs.job_id, node=obs.node, rank=obs.rank, gpu_index=obs.gpu_index,
            evidence=evidence, labels=dict(state.labels),
            runbook_url=self._runbook(obs.check),
            dashboard_url=self._dashboard_url(obs, state),
        )

    def _runbook(self, check: str) -> str:
        base = self.config.runbook_base_url
        if "{check}" in base:  # e.g. a repository view: ".../docs/runbooks/{check}.md"
            return base.replace("{check}", quote(check))
        return f"{base.rstrip('/')}/{quote(check)}"

    def _dashboard_url(self, obs: Observation, state: _State) -> str | None:
        base = self.config.dashboard_base_url.rstrip("/")
        if not base:
            return None
        first = min(obs.first_seen, state.starts_at) - DASHBOARD_MARGIN_S
        last = (state.ends_at or state.last_seen) + DASHBOARD_MARGIN_S
        # "$__all" is Grafana's own "every value" for a variable the alert cannot pin down.
        job = quote(obs.job_id, safe="") if obs.job_id is not None else "$__all"
        node = quote(obs.node, safe="") if obs.node is not None else "$__all"
        return (
            f"{base}/d/trainguard-job?var-job={job}&var-node={node}"
            f"&from={_millis(first)}&to={_millis(last)}"
        )


def _millis(t: float) -> str:
    """Epoch milliseconds as digits; ``inf`` rather than an OverflowError for absurd times."""
    return f"{t * 1000:.0f}"


def _constant(value: float) -> Callable[[str], float]:
    """The same time for every job."""
    return lambda _key: value
