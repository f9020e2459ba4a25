"""What a detector bank found, screened before it is reported: peers, then episodes.

A departure that most of a row's peer group (its job's other GPUs or ranks) shares at the
same time, on the same side, is benign: a checkpoint dip, a phase change or a new batch
size of the whole job; so is a change-point alarm of a row that shared such a departure
on the same side within ``episode_s`` (it lags its peers). Another anomaly of a row within
``episode_s`` of its last one is the same episode. Both leave the row's alarm as it is (it
clears or re-learns as usual); they only keep the detection out of the report, and count
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainguard.pipeline.detect.changepoint import Cusum, PageHinkley
from trainguard.pipeline.detect.types import BankConfig, Detection, RowState

__all__ = ["SUPPRESSED", "screen", "shared"]

#: Why a departure went unreported (keys of ``DetectorBank.suppressed``): ``small``
#: (under ``min_effect``), ``spike_quiet`` (a spike on a row that spikes often),
#: ``episode`` (the same episode again), ``shared`` (the row's group departs with it).
SUPPRESSED = ("small", "spike_quiet", "episode", "shared")

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
#: Alarm codes at and above this came from the change-point test (see ``bank``).
_CP_ALARM = 3


def screen(found: list[Detection], config: BankConfig, st: RowState,
           changes: Cusum | PageHinkley, suppressed: dict[str, int]) -> list[Detection]:
    """The detections worth reporting, in event-time order; counts the rest by reason."""
    if not found:
        return found
    found = sorted(found, key=lambda d: d.ts)
    is_shared = (shared(found, config, st, changes) if config.peer_share > 0
                 else np.zeros(len(found), dtype=bool))
    out: list[Detection] = []
    for d, peers in zip(found, is_shared, strict=True):
        side = int(st.alarm_sign[d.row])
        if peers or _lagging(d, config, st, side):
            # Not an episode of its own: a fault of this row alone, right after a
            # checkpoint dip of the whole job, is still news.
            suppressed["shared"] += 1
            # A change-point alarm shared with the peers (a small job-wide change) is
            # what a lagging row of the job finds later (see _lagging); a checkpoint dip
            # is not: a drift of the row alone may start right after one.
            from_cp = bool(st.alarm[d.row] >= _CP_ALARM)
            st.shared_at[d.row], st.shared_sign[d.row] = d.ts, side if from_cp else 0
            st.quiet_alarm[d.row] = bool(st.alarm[d.row] != 0)
            continue
        last, st.episode_last[d.row] = st.episode_last[d.row], d.ts
        if d.ts - last < config.episode_s:
            suppressed["episode"] += 1
            continue
        out.append(d)
    return out


def _lagging(d: Detection, config: BankConfig, st: RowState, side: int) -> bool:
    """A change-point alarm of a row still catching up with a small change its peers shared.

    Each row's change-point test finds a small job-wide change at its own time, and the
    peers that found it first have re-learnt by the time the last ones do. A point-test
    shift (a GPU collapsing) is judged on its own, however recent the shared change.
    """
    return bool(st.alarm[d.row] >= _CP_ALARM and st.shared_sign[d.row] == side
                and d.ts - st.shared_at[d.row] < config.episode_s)


def shared(found: list[Detection], config: BankConfig, st: RowState,
           changes: Cusum | PageHinkley) -> BoolArray:
    """Per detection: does ``peer_share`` of its live peers depart the same way too.

    A peer departs the same way when it went beyond ``z_shift`` on that side since the
    detection's first point (less ``peer_slack_s``, at most ``peer_window_s`` back), is
    in an alarm on that side, re-learnt a new normal on that side since that first point,
    has its recent mean z ``peer_z`` out on that side, or has a change-point sum past half
    its threshold. Peers are the rows of the group seen within
    ``peer_window_s``. One verdict per (group, side), vectorized over every group of the
    batch: a job-wide dip is thousands of detections at once, spikes across a cluster
    are hundreds of groups.
    """
    c = config
    rows = np.array([d.row for d in found], dtype=np.int64)
    groups, sides = st.group[rows], st.alarm_sign[rows]
    out = np.zeros(len(found), dtype=bool)
    hit = np.flatnonzero((groups >= 0) & (sides != 0))
    if not len(hit):
        return out
    ug, hit_k = np.unique(groups[hit], return_inverse=True)
    hit_j = (sides[hit] > 0).astype(np.int64)  # column 0: down, 1: up
    now = np.full((len(ug), 2), -np.inf)
    np.maximum.at(now, (hit_k, hit_j), np.array([found[i].ts for i in hit]))
    first = np.full((len(ug), 2), np.inf)
    np.minimum.at(first, (hit_k, hit_j), np.array([found[i].first_seen for i in hit]))
    since = np.maximum(first, now - c.peer_window_s) - c.peer_slack_s
    # The members of those groups, and which group each is in.
    group = st.group[: st.filled]  # rows past ``filled`` hold no state yet (RowArrays.grow)
    pos = np.minimum(np.searchsorted(ug, group), len(ug) - 1)
    m = np.flatnonzero((ug[pos] == group) & (group >= 0))
    k = pos[m]
    alive = st.last_ts[m] >= now.max(axis=1)[k] - c.peer_window_s
    m, k = m[alive], k[alive]
    n_alive = np.bincount(k, minlength=len(ug))
    for j, side, dep in ((0, -1, st.dep_down), (1, 1, st.dep_up)):
        departing = ((dep[m] >= since[k, j])
                     | ((st.alarm[m] != 0) & (st.alarm_sign[m] == side))
                     | ((st.relearn_at[m] >= first[k, j] - c.peer_slack_s)
                        & (st.relearn_sign[m] == side))
                     | (side * st.drift_z[m] >= c.peer_z)
                     | (changes.pressure(m, side) >= 0.5))
        n_dep = np.bincount(k, weights=departing, minlength=len(ug))
        # The detected rows depart themselves; the share is of the others. A row alone
        # has nobody to compare with.
        share = (n_dep - 1) / np.maximum(n_alive - 1, 1)
        verdict = (n_alive >= 2) & (share >= c.peer_share)
        mine = hit_j == j
        out[hit[mine]] = verdict[hit_k[mine]]
    return out
