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
            st.shared_at[d.row], st.shared_sign[d.row] = d.ts, side
            continue
        last, st.episode_last[d.row] = st.episode_last[d.row], d.ts
        if d.ts - last < config.episode_s:
            suppressed["episode"] += 1
            continue
        out.append(d)
    return out


def _lagging(d: Detection, config: BankConfig, st: RowState, side: int) -> bool:
    """A change-point alarm of a row still catching up with a change its peers shared.

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
    in an alarm on that side, has its recent mean z ``peer_z`` out on that side, or has a
    change-point sum past half its threshold. Peers
    are the rows of the group seen within ``peer_window_s``. One verdict per (group,
    side) of a batch, since a job-wide dip is thousands of detections at once.
    """
    c = config
    rows = np.array([d.row for d in found], dtype=np.int64)
    groups, sides = st.group[rows], st.alarm_sign[rows]
    ts = np.array([d.ts for d in found])
    first = np.array([d.first_seen for d in found])
    out = np.zeros(len(found), dtype=bool)
    for g, side in {(int(g), int(s)) for g, s in zip(groups, sides, strict=True) if g >= 0}:
        mine = np.flatnonzero((groups == g) & (sides == side))
        now = float(ts[mine].max())
        since = max(float(first[mine].min()), now - c.peer_window_s) - c.peer_slack_s
        members = np.flatnonzero(st.group == g)
        alive = members[st.last_ts[members] >= now - c.peer_window_s]
        if len(alive) < 2:
            continue  # the row alone: nobody to compare with
        dep = st.dep_up if side > 0 else st.dep_down
        departing = ((dep[alive] >= since)
                     | ((st.alarm[alive] != 0) & (st.alarm_sign[alive] == side))
                     | (side * st.drift_z[alive] >= c.peer_z)
                     | (changes.pressure(alive, side) >= 0.5))
        # The detected rows depart themselves; the share is of the others.
        share = (int(departing.sum()) - 1) / (len(alive) - 1)
        out[mine] = share >= c.peer_share
    return out
