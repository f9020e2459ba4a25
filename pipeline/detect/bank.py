"""One metric's anomaly detectors for many rows at once: spikes, level shifts and drifts.

Per row the bank keeps two baselines. The *fast* one is the median of the last
``window`` learned values, with a scale ``max(1.4826 * MAD, EWM std of the residual to
that median, floors)``, raised to the row's recent volatility during a burst of noise;
a point's robust z against it decides spikes and level shifts. The *slow* one is an
exponentially weighted mean (half-life ``half_life`` samples); a CUSUM (or Page-Hinkley)
test on z against it finds shifts too small for the point test and drifts the fast
baseline keeps following. That test sums residuals, so its scale is the long-run one
(inflated by the lag-1 autocorrelation of the residuals), and it starts only once a row
has learned ``cp_after`` values. Its alarms must also have moved at least ``min_effect``
of the baseline from an *anchor*, a slower EWM (``anchor_half_life``) that a drift does
not drag along as fast.

Per row and point, once ``min_samples`` values are learned:

* an excursion opens at a point beyond ``z_shift`` that is also at least ``min_effect``
  of the baseline away (a series pegged at 100 % that reads 97 is not news). ``confirm``
  consecutive such points on one side make a **level shift** (``first_seen`` = the
  excursion's first point); a run that changes side (a burst of noise) starts over. An
  excursion of fewer points that peaked beyond ``z_spike`` and then came back within
  ``z_clear`` is a spike candidate, reported as a **spike** on the point that came back
  (``ts``) only if no excursion of the row came back from beyond ``z_tail`` within
  ``spike_quiet_s``: real telemetry is heavy-tailed, and a row that spikes every few
  minutes spikes as a matter of course.
  A spike is never also a shift, and a shift never a string of spikes.
* a change-point alarm is a **drift** when the per-point robust z was small over its
  excursion: below ``z_drift``, estimated as the excursion's mean z against the slow
  baseline less the gap the fast baseline has already closed. Otherwise it is a
  **level shift**. Either way its baseline and score refer to the slow baseline.
* a row that fired is in alarm: no new anomaly and no learning (the baseline is frozen)
  until ``clear`` consecutive points are back within ``z_clear``. Change-point alarms
  fire on deviations smaller than that, so they clear by a mirror CUSUM back toward the
  slow baseline instead. An alarm that has not cleared after ``relearn_after`` points is
  a new normal: the baseline is rebuilt from the last ``window`` values, which a second
  ring keeps for that, once 90 % of them sit at one level (not amid a checkpoint dip).

What fired is then screened (:mod:`~trainguard.pipeline.detect.screen`): a departure
that at least ``peer_share`` of the row's live peer group (its job's other GPUs or ranks,
given to :meth:`DetectorBank.update`) share at the same time, on the same side, is
benign (a checkpoint dip, a phase change of the job): the row is in alarm as usual, so
it clears or re-learns, but nothing is reported. Another anomaly of a row within ``episode_s`` of
its last one is the same episode. :attr:`DetectorBank.suppressed` counts what each rule
kept out.

Points are skipped (no learning, no verdict) when the value or time is not finite, or
the time is not after the row's last point: a replayed message changes nothing.
State is fixed per row: about 1.3 KB with the default 60-value window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainguard.pipeline.detect.baseline import (
    DIFF_TO_SIGMA,
    Ewm,
    EwmLag1,
    RobustWindow,
    SortedWindow,
)
from trainguard.pipeline.detect.baseline import unique_rounds as _unique_rounds
from trainguard.pipeline.detect.changepoint import ChangeAlarms, Cusum, PageHinkley
from trainguard.pipeline.detect.quiet import AVAILABLE as _COMPILED
from trainguard.pipeline.detect.quiet import QuietPath
from trainguard.pipeline.detect.registry import FloatArray, IntArray, RowGroup
from trainguard.pipeline.detect.screen import SUPPRESSED, screen
from trainguard.pipeline.detect.types import AnomalyKind, BankConfig, Detection, RowState

__all__ = ["STATE_FORMAT", "SUPPRESSED", "DetectorBank"]

#: Layout version of :meth:`DetectorBank.state` snapshots.
STATE_FORMAT = 2

# Alarm codes kept per row; 3 and 4 came from the change-point test.
_SPIKE, _SHIFT, _CP_SHIFT, _CP_DRIFT = 1, 2, 3, 4
_KIND: dict[int, AnomalyKind] = {1: "spike", 2: "level_shift", 3: "level_shift", 4: "drift"}


#: What :meth:`DetectorBank._judge` leaves at 0 (False) for a quiet row: no excursion, no
#: alarm, nothing to clear from (``exc_t0`` goes to NaN).
_QUIET_RESET = ("exc_open", "exc_run", "exc_beyond", "alarm", "quiet_alarm", "alarm_sign",
                "alarm_len", "back_sum", "clear_run", "back_ref")


class DetectorBank(RowGroup):
    """Anomaly detection for one metric over many rows (entities), vectorized.

    Rows are small ints handed out by an
    :class:`~trainguard.pipeline.detect.registry.EntityRegistry`;
    :meth:`update` grows the bank to fit them. From :class:`RowGroup` come ``grow``,
    ``reset_rows`` (for rows the registry expired), and the snapshots: a worker saves
    :meth:`state` so a restart does not warm up again, and moves :meth:`state_rows` with a
    Kafka partition on rebalance (the new owner loads them into rows of its own registry).

    With numba installed (and ``compiled``), CUSUM banks hand each batch to a compiled
    kernel first (:mod:`~trainguard.pipeline.detect.quiet`): it takes the points that leave
    a row quiet, bitwise as :meth:`_step` would, and returns the others to it.
    """

    def __init__(self, metric: str, config: BankConfig | None = None, capacity: int = 1024,
                 *, compiled: bool = True):
        self.metric = metric
        self.config = c = config or BankConfig()
        self.detector = f"robust-{c.changepoint}"
        self._cusum = c.changepoint == "cusum"
        fast = compiled and _COMPILED and self._cusum
        # Learned values: the fast baseline (sorted too, for the compiled quiet path).
        self.window = (SortedWindow if fast else RobustWindow)(capacity, c.window)
        self.recent = RobustWindow(capacity, c.window)  # every value, to re-baseline from
        self.level = Ewm(capacity, c.half_life)  # the slow baseline
        self.anchor = Ewm(capacity, c.anchor_half_life)  # what a change's size is taken from
        self.spread = EwmLag1(capacity, c.half_life)  # residual to the fast baseline: scale
        self.changes: Cusum | PageHinkley = (
            Cusum(capacity, c.cp_drift, c.cp_threshold, c.direction)
            if c.changepoint == "cusum"
            else PageHinkley(capacity, c.cp_drift, c.cp_threshold, c.direction)
        )
        self.rows = RowState(capacity)
        #: Departures not reported, by why: ``small`` (under ``min_effect``), ``spike_quiet``
        #: (a spike on a row that spikes often), ``episode`` (the same episode again),
        #: ``shared`` (the row's group departs with it).
        self.suppressed: dict[str, int] = dict.fromkeys(SUPPRESSED, 0)
        super().__init__(
            {"window": self.window, "recent": self.recent, "level": self.level,
             "anchor": self.anchor, "spread": self.spread, "cp": self.changes,
             "row": self.rows},
            STATE_FORMAT,
        )
        # Quiet points through the compiled kernel (same state, bitwise), the rest vectorized.
        self._quiet = QuietPath(self) if fast else None

    def quiet_points(self) -> tuple[int, int]:
        """Points the compiled quiet path took in and passed on, since start.

        ``(0, 0)`` for a bank without it (Page-Hinkley, or no numba).
        """
        q = self._quiet
        return (q.taken, q.passed) if q is not None else (0, 0)

    def update(self, rows: IntArray, values: FloatArray, ts: FloatArray,
               groups: IntArray | None = None) -> list[Detection]:
        """Feed one value per row with its event time; returns the anomalies confirmed.

        A row may appear more than once: its points are applied in event-time order.
        ``groups`` puts each row in a peer group (its job; -1 for none): a departure most
        of its group shares is benign (see :mod:`~trainguard.pipeline.detect.screen`).
        """
        rows = np.asarray(rows, dtype=np.int64)
        values, ts = np.asarray(values, dtype=np.float64), np.asarray(ts, dtype=np.float64)
        if not len(rows) == len(values) == len(ts):
            raise ValueError(
                f"lengths differ: {len(rows)} rows, {len(values)} values, {len(ts)} ts"
            )
        if len(rows) == 0:
            return []
        if rows.min() < 0:
            raise ValueError(f"rows must be >= 0, got {int(rows.min())}")
        self.grow(int(rows.max()) + 1)
        if groups is not None:
            self.rows.group[rows] = np.asarray(groups, dtype=np.int64)
        found: list[Detection] = []
        for idx in _unique_rounds(rows, ts):
            r, x, t = rows[idx], values[idx], ts[idx]
            if self._quiet is not None:
                rest = self._quiet(r, x, t)
                if not len(rest):
                    continue
                r, x, t = r[rest], x[rest], t[rest]
            found += self._step(r, x, t)[0]
        return screen(found, self.config, self.rows, self.changes, self.suppressed)

    def _step(
        self, r: IntArray, x: FloatArray, t: FloatArray
    ) -> tuple[list[Detection], FloatArray]:
        """One point for each of some unique rows; also returns each point's directional z."""
        c, st = self.config, self.rows
        e_out = np.full(len(r), np.nan)
        keep = np.flatnonzero(np.isfinite(x) & np.isfinite(t) & (t > st.last_ts[r]))
        r, x, t = r[keep], x[keep], t[keep]
        st.last_ts[r] = t
        self.recent.push(r, x)
        count = self.window.count[r]
        warming = count < c.min_samples
        if warming.any():
            self._warm_up(r[warming], x[warming], count[warming], t[warming])
            st.prev_x[r[warming]] = x[warming]
            live = np.flatnonzero(~warming)
            keep, r, x, t = keep[live], r[live], x[live], t[live]
        # Only rows past warm-up need their baseline (a sort of each row's window).
        median, mad_scale, count = self.window.stats(r)
        scale = self._bursty(r, x, self._scale(r, median, mad_scale))
        z = (x - median) / scale
        # What peers of these rows are judged by (see _shared), held rows included.
        big = np.abs(x - median) >= c.min_effect * np.abs(median)
        st.last_z[r] = z
        st.dep_up[r] = np.where(big & (z > c.z_shift), t, st.dep_up[r])
        st.dep_down[r] = np.where(big & (z < -c.z_shift), t, st.dep_down[r])
        # The change-point test sums residuals: autocorrelated noise makes sums wander
        # more, by sqrt((1+rho)/(1-rho)) for AR(1) noise, so its scale is the long-run one.
        rho = np.clip(self.spread.rho(r), 0.0, 0.95)
        slow_scale = scale * np.sqrt((1.0 + rho) / (1.0 - rho))
        zs = (x - self.level.mean[r]) / slow_scale
        drift_z = st.drift_z[r]
        st.drift_z[r] = drift_z + c.vol_alpha * (np.clip(zs, -c.z_shift, c.z_shift) - drift_z)
        e = self._directional(z)
        e_out[keep] = e

        # A row in alarm at this point only counts towards clearing; the others are judged.
        in_alarm = st.alarm[r] != 0
        held, free = np.flatnonzero(in_alarm), np.flatnonzero(~in_alarm)
        found: list[Detection] = []
        if len(held):
            stuck = self._hold(r[held], e[held], zs[held], t[held])
            found += self._still_departed(held[stuck], r, x, t, median, scale, count)
        found += self._judge(
            r[free], x[free], t[free], z[free], zs[free], median[free], scale[free],
            slow_scale[free], count[free], big[free],
        )
        return found, e_out

    def _still_departed(self, i: IntArray, r: IntArray, x: FloatArray, t: FloatArray,
                        median: FloatArray, scale: FloatArray,
                        count: IntArray) -> list[Detection]:
        """Rows re-learning after an alarm their peers shared: judged again, now.

        The job's checkpoint dip ended for the peers but this row stayed away from its
        baseline (its power fell 20 % during the dip): no longer the peers' departure.
        The screen asks the peers again; a job-wide phase change is still theirs too.
        """
        st = self.rows
        i = i[st.quiet_alarm[r[i]]]
        st.quiet_alarm[r[i]] = False
        return [
            Detection(row=int(r[k]), metric=self.metric, kind="level_shift", ts=float(t[k]),
                      first_seen=float(st.shared_at[r[k]]), value=float(x[k]),
                      baseline=float(median[k]), scale=float(scale[k]),
                      score=float((x[k] - median[k]) / scale[k]), window=int(count[k]),
                      detector=self.detector)
            for k in i
        ]

    def baseline(self, rows: IntArray) -> tuple[FloatArray, FloatArray, IntArray]:
        """Baseline median, the scale z is measured in, and values learned, per row.

        What the next point of each row is judged against (frozen while in alarm); NaN
        median for a row with no values yet.
        """
        rows = np.asarray(rows, dtype=np.int64)
        median, mad_scale, count = self.window.stats(rows)
        return median, self._scale(rows, median, mad_scale), count

    def _scale(self, r: IntArray, median: FloatArray, mad_scale: FloatArray) -> FloatArray:
        c = self.config
        return np.maximum.reduce([
            mad_scale, np.sqrt(self.spread.var[r]),
            np.full(len(r), c.min_scale), c.min_rel_scale * np.abs(median),
        ])

    def _bursty(self, r: IntArray, x: FloatArray, scale: FloatArray) -> FloatArray:
        """``scale``, raised to the row's recent volatility while that is higher (a burst).

        Volatility is a fast EWM of the point-to-point change ``|x - previous x|``: a burst
        of noise raises it within a few points, while a level shift is one large change
        (capped at 3x the current volatility), so a shift stays a shift. It counts once it
        is ``burst_ratio`` above the long-run scale; it is measured before this point.
        """
        c, st = self.config, self.rows
        vol = st.vol[r]
        # E|x - x'| = 2/sqrt(pi) sigma for independent normal x, x'.
        out = np.maximum(scale, vol / (DIFF_TO_SIGMA * c.burst_ratio))
        step = np.abs(x - st.prev_x[r])
        step = np.minimum(step, 3.0 * np.maximum(vol, DIFF_TO_SIGMA * scale))
        st.vol[r] = np.where(np.isfinite(step), vol + c.vol_alpha * (step - vol), vol)
        st.prev_x[r] = x
        return out

    def _directional(self, z: FloatArray) -> FloatArray:
        """How far ``z`` is out in the directions this metric cares about."""
        d = self.config.direction
        return np.abs(z) if d == "both" else (z if d == "up" else -z)

    def _warm_up(self, r: IntArray, x: FloatArray, count: IntArray, t: FloatArray) -> None:
        """Learn every value; a row that completes warm-up seeds its EWMs robustly."""
        self.window.push(r, x)
        is_done = count + 1 == self.config.min_samples
        done = r[is_done]
        if len(done):
            # Spikes count only once the row has shown it does not spike all the time.
            self.rows.spike_last[done] = t[is_done]
            # Seeding from median and MAD, not from the EWMs fed so far, keeps wild
            # warm-up values out of the slow baseline and the scale.
            median, mad_scale, count = self.window.stats(done)
            self._seed(done, median, mad_scale, count)

    def _seed(self, r: IntArray, median: FloatArray, mad_scale: FloatArray, n: IntArray) -> None:
        """Start both EWMs of ``r`` from its window: robustly, and precisely enough."""
        # The MAD of 30 values is often 30% low; the winsorized variance is steadier.
        var = np.maximum(mad_scale**2, self.window.winsorized_var(r, median, mad_scale))
        self.level.seed(r, median, var, n)
        self.anchor.seed(r, median, var, n)
        self.spread.seed(r, np.zeros(len(r)), var, n)

    def _hold(self, r: IntArray, e: FloatArray, zs: FloatArray, t: FloatArray) -> IntArray:
        """Rows in alarm: gather evidence of a return to baseline; clear or re-baseline.

        Returns the indices (into ``r``) of the rows that re-baselined.
        """
        c, st = self.config, self.rows
        clear_run = np.where(e <= c.z_clear, st.clear_run[r] + 1, 0)
        # A few points within z_clear cannot tell a 1-sigma shift that ended from one that
        # persists, so change-point alarms clear by the mirror test: a CUSUM toward the
        # slow baseline, with half the alarm's mean z as allowance, reaching the same h.
        ref = st.back_ref[r]
        back_sum = np.maximum(st.back_sum[r] + np.abs(ref) - np.sign(ref) * zs, 0.0)
        st.back_sum[r] = back_sum
        from_cp = st.alarm[r] >= _CP_SHIFT
        cleared = np.where(from_cp, back_sum > c.cp_threshold, clear_run >= c.clear)
        alarm_len = st.alarm_len[r] + 1
        st.clear_run[r] = np.where(cleared, 0, clear_run)
        st.alarm_len[r] = np.where(cleared, 0, alarm_len)
        st.alarm[r] = np.where(cleared, 0, st.alarm[r])
        st.quiet_alarm[r] &= ~cleared
        idx = np.flatnonzero(~cleared & (alarm_len >= c.relearn_after))
        if len(idx):
            idx = idx[self._settled(r[idx])]
        if len(idx):
            stuck = r[idx]
            st.relearn_at[stuck], st.relearn_sign[stuck] = t[idx], st.alarm_sign[stuck]
            self.window.copy_rows(self.recent, stuck)
            median, mad_scale, count = self.window.stats(stuck)
            self._seed(stuck, median, mad_scale, count)
            st.alarm[stuck], st.alarm_len[stuck], st.clear_run[stuck] = 0, 0, 0
            st.exc_open[stuck] = False
            self.changes.reset(stuck)
        return idx

    def _settled(self, r: IntArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Rows whose recent values sit at one level: a new normal to re-learn from.

        Not yet while 10 % of them lie beyond ``z_shift`` of their median (say a job's
        checkpoint dip and the work around it): the alarm goes on, and so does the wait.
        """
        median, mad_scale, _ = self.recent.stats(r)
        scale = np.maximum(mad_scale, self._scale(r, median, mad_scale))
        far = np.abs(self.recent.buf[r] - median[:, None]) > self.config.z_shift * scale[:, None]
        return np.asarray(far.mean(axis=1) < 0.1)

    def _judge(
        self, r: IntArray, x: FloatArray, t: FloatArray, z: FloatArray, zs: FloatArray,
        median: FloatArray, scale: FloatArray, slow_scale: FloatArray, count: IntArray,
        big: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> list[Detection]:
        """Rows not in alarm: advance excursions and the change-point test, then learn."""
        c, st = self.config, self.rows
        e = self._directional(z)
        changes = self._changes(r, zs, t)
        was_open = st.exc_open[r]
        beyond = (e > c.z_shift) & big
        busy = was_open | beyond | (changes.sign != 0)
        if not busy.all():
            # Most rows, most of the time: no excursion open or opening, no change found.
            # Their state machine comes to fixed values, set outright; they learn.
            quiet = r[~busy]
            for name in _QUIET_RESET:
                getattr(st, name)[quiet] = 0
            st.exc_t0[quiet] = np.nan
            self._learn(quiet, x[~busy], median[~busy], scale[~busy])
            a = np.flatnonzero(busy)
            if not len(a):
                return []
            r, x, t, z, zs, e = r[a], x[a], t[a], z[a], zs[a], e[a]
            median, scale, slow_scale, count = median[a], scale[a], slow_scale[a], count[a]
            big, was_open, beyond = big[a], was_open[a], beyond[a]
            changes = ChangeAlarms(changes.sign[a], changes.onset[a], changes.mean[a])
        return self._excursions(r, x, t, z, e, zs, median, scale, slow_scale, count, big,
                                changes, was_open, beyond)

    def _excursions(
        self, r: IntArray, x: FloatArray, t: FloatArray, z: FloatArray, e: FloatArray,
        zs: FloatArray, median: FloatArray, scale: FloatArray, slow_scale: FloatArray,
        count: IntArray, big: np.ndarray[Any, np.dtype[np.bool_]], changes: ChangeAlarms,
        was_open: np.ndarray[Any, np.dtype[np.bool_]],
        beyond: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> list[Detection]:
        """:meth:`_judge` of rows with an excursion open or opening, or a change found."""
        c, st = self.config, self.rows
        slow = self.level.mean[r]
        opened = beyond & ~was_open
        is_open = was_open | beyond
        t0 = np.where(opened, t, np.where(was_open, st.exc_t0[r], np.nan))
        st.exc_t0[r] = t0
        # A level moved to one side: a run that changes side (a burst) starts over.
        side = np.sign(z).astype(np.int8)
        run = np.where(beyond, np.where(side == st.exc_sign[r], st.exc_run[r] + 1, 1), 0)
        st.exc_sign[r] = np.where(beyond, side, st.exc_sign[r])
        n_beyond = np.where(opened, 0, st.exc_beyond[r]) + beyond
        peak = is_open & (opened | (e > st.peak_e[r]))
        for name, new in (("peak_e", e), ("peak_x", x), ("peak_base", median),
                          ("peak_scale", scale)):
            column = getattr(st, name)
            column[r] = np.where(peak, new, column[r])
        shift = is_open & (run >= c.confirm)
        back = was_open & (e <= c.z_clear) & (n_beyond < c.confirm) & ~shift
        candidate = back & (st.peak_e[r] > c.z_spike)
        # Heavy tails: a row that recently came back from beyond z_tail spikes as a matter
        # of course (a light-tailed row goes beyond z_tail about never).
        spike = candidate & (t - st.spike_last[r] > c.spike_quiet_s)
        st.spike_last[r] = np.where(back & (st.peak_e[r] > c.z_tail), t, st.spike_last[r])
        # A CUSUM that the first point of an excursion tips over is for the point test to
        # call (a spike, or a shift once confirmed), not a shift at once; the CUSUM fires
        # again if the change lasts. (Page-Hinkley learns its own reference after an
        # alarm, so one dropped there would be lost for good.)
        change = (changes.sign != 0) & ~shift & ~spike & ~(opened & self._cusum)
        # A drift is followed by the fast baseline, so z against it stays small.
        fast_z = changes.mean - changes.sign * (median - slow) / slow_scale
        anchor = self.anchor.mean[r]
        size = np.maximum(changes.mean * slow_scale, np.abs(median - anchor))
        small = change & (size < c.min_effect * np.abs(anchor))
        change &= ~small
        self.suppressed["spike_quiet"] += int(np.count_nonzero(candidate & ~spike))
        self.suppressed["small"] += int(np.count_nonzero(small))
        code = np.select(
            [shift, spike, change & (fast_z >= c.z_drift), change],
            [_SHIFT, _SPIKE, _CP_SHIFT, _CP_DRIFT], 0,
        ).astype(np.int8)
        fired = code != 0
        # An excursion ends when it fires or comes back within z_clear.
        still_open = is_open & ~fired & ~(was_open & (e <= c.z_clear))
        st.exc_open[r] = still_open
        st.exc_run[r], st.exc_beyond[r] = run * still_open, n_beyond * still_open
        st.alarm[r] = code
        st.quiet_alarm[r] = False
        st.alarm_sign[r] = np.select(
            [shift, spike, change],
            [side, np.sign(st.peak_x[r] - st.peak_base[r]), changes.sign], 0,
        ).astype(np.int8)
        st.alarm_len[r], st.back_sum[r] = 0, 0.0
        st.clear_run[r] = np.where(code == _SPIKE, 1, 0)  # the point that came back counts
        st.back_ref[r] = np.where(change, 0.5 * changes.sign * changes.mean, 0.0)

        learn = np.flatnonzero(~fired & ~beyond)
        if len(learn):
            self._learn(r[learn], x[learn], median[learn], scale[learn])
        hits = np.flatnonzero(fired)
        if not len(hits):
            return []
        self.changes.reset(r[hits])
        return [
            self._anomaly(int(r[i]), int(code[i]), float(t[i]), float(x[i]), float(t0[i]),
                          float(changes.onset[i]), float(median[i]), float(slow[i]),
                          float(scale[i]), float(slow_scale[i]), int(count[i]))
            for i in hits
        ]

    def _changes(self, r: IntArray, zs: FloatArray, t: FloatArray) -> ChangeAlarms:
        """The change-point test, for rows whose scale is settled enough for it."""
        c = self.config
        # Its small allowance makes it the test most hurt by a scale estimated too low,
        # as one from a few dozen values can be; so it waits for cp_after values.
        ready = np.flatnonzero(self.spread.n[r] >= c.cp_after)
        # Clipped, so one wild point adds at most z_shift to the change-point sums.
        found = self.changes.update(r[ready], np.clip(zs[ready], -c.z_shift, c.z_shift), t[ready])
        if len(ready) == len(r):
            return found
        out = ChangeAlarms(np.zeros(len(r), np.int8), np.full(len(r), np.nan),
                           np.full(len(r), np.nan))
        out.sign[ready], out.onset[ready], out.mean[ready] = found
        return out

    def _learn(self, r: IntArray, x: FloatArray, median: FloatArray, scale: FloatArray) -> None:
        """Fold normal points into both baselines."""
        self.window.push(r, x)
        # Points far out in an ignored direction are learned, or an "up"-only metric
        # could never follow a drop; winsorized, so one of them cannot drag the EWMs.
        bound = self.config.z_shift * scale
        xw = np.clip(x, median - bound, median + bound)
        self.level.update(r, xw)
        self.anchor.update(r, xw)
        self.spread.update(r, xw - median)

    def _anomaly(self, row: int, code: int, t: float, x: float, t0: float, onset: float,
                 median: float, slow: float, scale: float, slow_scale: float,
                 count: int) -> Detection:
        """Build the record for one row that fired (rare: a Python loop is fine here)."""
        st = self.rows
        if code == _SPIKE:
            x, median, scale = (float(a[row]) for a in (st.peak_x, st.peak_base, st.peak_scale))
            first = t0
        elif code == _SHIFT:
            first = t0
        else:
            # The test measures against the slow baseline. Its onset (its sum's last zero)
            # can run early by a few noise points; an open excursion marks a jump exactly.
            median, scale = slow, slow_scale
            first = onset if np.isnan(t0) else t0
        return Detection(
            row=row, metric=self.metric, kind=_KIND[code], ts=t, first_seen=first, value=x,
            baseline=median, scale=scale, score=(x - median) / scale, window=count,
            detector=self.detector,
        )
