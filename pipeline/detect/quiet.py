"""The detector bank's quiet path, compiled: points a row learns without anything to report.

Nearly every point of a healthy fleet is one that a row past warm-up, not in alarm and
with no excursion open takes in quietly: it is judged, stays within its baseline, tips no
change-point test and is learned. :meth:`DetectorBank.update
<trainguard.pipeline.detect.bank.DetectorBank.update>` hands each batch to
:class:`QuietPath` first. Its numba kernel makes one pass per point over that row's state
(the ~100 numpy calls of the vectorized path each gather and scatter every row of the
batch over a few hundred MB of windows) and runs without the GIL. For such a point it
computes what ``DetectorBank._step`` computes, with the same floating-point operations in
the same order, so the state it leaves is bitwise the same (a test holds the two paths to
that), and it commits that state only when the point stays quiet. Every other point
(warming up, in alarm, opening or continuing an excursion, tipping the
change-point test) it leaves untouched and returns, for the vectorized path to take whole.

The median and MAD come from a sorted copy of each row's window
(:class:`~trainguard.pipeline.detect.baseline.SortedWindow`) that the kernel keeps sorted
as it learns (one value out, one in) instead of sorting the row twice per point: the
median is read off the middle, and the MAD by a binary search over the distances to it,
which grow outward from the middle on both sides. Same values as the sorts give.

Without numba (an optional speed-up: ``pip install numba``) every point takes the
vectorized path; what is detected is the same either way.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from trainguard.pipeline.detect.baseline import DIFF_TO_SIGMA, MAD_TO_SIGMA, SortedWindow
from trainguard.pipeline.detect.compiled import (
    AVAILABLE,
    ewm_update,
    insert_sorted,
    jit,
    median_mad,
    npmax,
    npmin,
    replace_sorted,
    sort_first,
)
from trainguard.pipeline.detect.registry import FloatArray, IntArray

if TYPE_CHECKING:
    from trainguard.pipeline.detect.bank import DetectorBank

__all__ = ["AVAILABLE", "QuietPath", "warm_up"]

log = logging.getLogger(__name__)

# The direction codes of the kernel's integer parameters.
_BOTH, _UP, _DOWN = 0, 1, 2
_DIRECTION = {"both": _BOTH, "up": _UP, "down": _DOWN}


@jit
def _quiet_points(r: Any, x: Any, t: Any, order: Any, window: Any, recent: Any, level: Any,
                  anchor: Any, spread: Any, cusum: Any, st: Any, p: Any,
                  ip: Any) -> Any:  # pragma: no cover - compiled
    """Take every quiet point of ``r, x, t`` (unique rows), visiting them in ``order``.

    Returns the indices of the other points, ascending (the vectorized path takes them in
    the batch's order).
    """
    wbuf, wpos, wcount, wsorted, wfresh = window
    rbuf, rpos, rcount = recent
    lmean, lvar, ln = level
    amean, avar, an = anchor
    smean, svar, sn, sprev, scov1 = spread
    cup, cdown, cnup, cndown, ctup, ctdown = cusum
    (last_ts, prev_x, vol, last_z, dep_up, dep_down, drift_z, alarm, exc_open, exc_run,
     exc_beyond, quiet_alarm, alarm_sign, alarm_len, back_sum, clear_run, back_ref,
     exc_t0) = st
    (min_scale, min_rel_scale, min_effect, z_shift, k, h, vol_alpha, diff_burst, diff,
     level_alpha, anchor_alpha, spread_alpha) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                                                 p[7], p[8], p[9], p[10], p[11])
    size, cp_after, direction, up_on, down_on, min_samples = ip[0], ip[1], ip[2], ip[3], \
        ip[4], ip[5]
    rest = np.empty(len(r), np.int64)
    n_rest = 0
    for i in order:
        row, xi, ti = r[i], x[i], t[i]
        if not (math.isfinite(xi) and math.isfinite(ti) and ti > last_ts[row]):
            continue  # skipped by either path: no learning, no verdict
        if alarm[row] != 0 or exc_open[row] or wcount[row] < min_samples:
            rest[n_rest] = i
            n_rest += 1
            continue
        count = wcount[row]
        pos = wpos[row]
        # Compiled code checks no bounds: a ring position from a damaged snapshot goes to
        # the vectorized path, which raises (the record becomes a dead letter).
        if not (0 <= pos < size and 0 <= rpos[row] < size):
            rest[n_rest] = i
            n_rest += 1
            continue
        if count < size and wbuf[row, pos] == wbuf[row, pos]:
            rest[n_rest] = i  # a ring not filled from slot 0 (never made here): not ours
            n_rest += 1
            continue
        srt = wsorted[row]
        if not wfresh[row]:  # its ring changed elsewhere: sort it again
            n = 0
            for j in range(size):
                v = wbuf[row, j]
                if v == v:
                    srt[n] = v
                    n += 1
            if n != count:
                rest[n_rest] = i
                n_rest += 1
                continue
            sort_first(srt, n)
            wfresh[row] = True
        median, mad = median_mad(srt[:count])
        mad_scale = MAD_TO_SIGMA * mad
        # DetectorBank._scale, then _bursty.
        base = npmax(npmax(npmax(mad_scale, math.sqrt(svar[row])), min_scale),
                      min_rel_scale * abs(median))
        v0 = vol[row]
        scale = npmax(base, v0 / diff_burst)
        step = npmin(abs(xi - prev_x[row]), 3.0 * npmax(v0, diff * base))
        new_vol = v0 + vol_alpha * (step - v0) if math.isfinite(step) else v0
        z = (xi - median) / scale
        big = abs(xi - median) >= min_effect * abs(median)
        sv = svar[row]
        rho = scov1[row] / sv if sv > 0 else 0.0
        rho = npmin(npmax(rho, 0.0), 0.95)
        slow_scale = scale * math.sqrt((1.0 + rho) / (1.0 - rho))
        zs = (xi - lmean[row]) / slow_scale
        zc = npmin(npmax(zs, -z_shift), z_shift)
        e = abs(z) if direction == _BOTH else (z if direction == _UP else -z)
        if e > z_shift and big:
            rest[n_rest] = i
            n_rest += 1
            continue
        # The change-point test (Cusum.update), for rows whose scale is settled.
        ready = sn[row] >= cp_after
        s_up, n_up, t_up = cup[row], cnup[row], ctup[row]
        s_dn, n_dn, t_dn = cdown[row], cndown[row], ctdown[row]
        if ready and up_on:
            s_up = npmax(s_up + zc - k, 0.0)
            n_up = n_up + 1 if s_up > 0 else 0
            t_up = ti if n_up == 1 else t_up
        if ready and down_on:
            s_dn = npmax(s_dn + -zc - k, 0.0)
            n_dn = n_dn + 1 if s_dn > 0 else 0
            t_dn = ti if n_dn == 1 else t_dn
        if ready and ((up_on and s_up > h) or (down_on and s_dn > h)):
            rest[n_rest] = i
            n_rest += 1
            continue
        # Quiet: commit what _step and _judge's quiet branch write.
        last_ts[row] = ti
        rp = rpos[row]
        rbuf[row, rp] = xi
        rpos[row] = (rp + 1) % size
        rcount[row] = min(rcount[row] + 1, size)
        vol[row], prev_x[row], last_z[row] = new_vol, xi, z
        if big and z > z_shift:
            dep_up[row] = ti
        if big and z < -z_shift:
            dep_down[row] = ti
        dz = drift_z[row]
        drift_z[row] = dz + vol_alpha * (zc - dz)
        if ready:
            cup[row], cnup[row], ctup[row] = s_up, n_up, t_up
            cdown[row], cndown[row], ctdown[row] = s_dn, n_dn, t_dn
        exc_open[row], exc_run[row], exc_beyond[row] = False, 0, 0
        alarm[row], quiet_alarm[row], alarm_sign[row], alarm_len[row] = 0, False, 0, 0
        back_sum[row], clear_run[row], back_ref[row] = 0.0, 0, 0.0
        exc_t0[row] = np.nan
        # DetectorBank._learn.
        if count == size:
            replace_sorted(srt, wbuf[row, pos], xi)
        else:
            insert_sorted(srt, count, xi)
        wbuf[row, pos] = xi
        wpos[row] = (pos + 1) % size
        wcount[row] = min(wcount[row] + 1, size)
        bound = z_shift * scale
        xw = npmin(npmax(xi, median - bound), median + bound)
        ewm_update(lmean, lvar, ln, row, xw, level_alpha)
        ewm_update(amean, avar, an, row, xw, anchor_alpha)
        resid = xw - median
        prev = sprev[row]
        if prev == prev:  # EwmLag1.update: the lag-1 covariance, then the mean and variance
            a = npmax(spread_alpha, 1.0 / (sn[row] + 1))
            m = smean[row]
            scov1[row] = (1.0 - a) * scov1[row] + a * ((resid - m) * (prev - m))
        sprev[row] = resid
        ewm_update(smean, svar, sn, row, resid, spread_alpha)
    return np.sort(rest[:n_rest])


class QuietPath:
    """The compiled quiet path of one :class:`DetectorBank` (CUSUM change points only)."""

    def __init__(self, bank: DetectorBank) -> None:
        c = bank.config
        self._bank = bank
        # The bank's own constants: the kernel must compute exactly what _step does.
        self._p = np.array([
            c.min_scale, c.min_rel_scale, c.min_effect, c.z_shift, c.cp_drift, c.cp_threshold,
            c.vol_alpha, DIFF_TO_SIGMA * c.burst_ratio, DIFF_TO_SIGMA,
            bank.level.alpha, bank.anchor.alpha, bank.spread.alpha,
        ], dtype=np.float64)
        up_on, down_on = c.direction != "down", c.direction != "up"
        self._ip = np.array([c.window, c.cp_after, _DIRECTION[c.direction], up_on, down_on,
                             c.min_samples], dtype=np.int64)
        #: Points the kernel took (learned quietly, or skipped as stale) and passed on.
        self.taken = 0
        self.passed = 0

    def __call__(self, r: IntArray, x: FloatArray, t: FloatArray) -> IntArray:
        """Take the quiet points of unique rows ``r``; return the indices of the others."""
        b = self._bank
        st, cp = b.rows, b.changes
        w = b.window
        assert isinstance(w, SortedWindow)
        # In row order: a row's state is ~45 scattered values, and rows of a batch in
        # message order hop over hundreds of MB; sorted, neighbours share cache lines.
        order = np.argsort(r)
        rest: IntArray = _quiet_points(
            r, x, t, order,
            (w.buf, w.pos, w.count, w.sorted, w.fresh),
            (b.recent.buf, b.recent.pos, b.recent.count),
            (b.level.mean, b.level.var, b.level.n),
            (b.anchor.mean, b.anchor.var, b.anchor.n),
            (b.spread.mean, b.spread.var, b.spread.n, b.spread.prev, b.spread.cov1),
            (cp.up, cp.down, cp.n_up, cp.n_down, cp.t_up, cp.t_down),
            (st.last_ts, st.prev_x, st.vol, st.last_z, st.dep_up, st.dep_down, st.drift_z,
             st.alarm, st.exc_open, st.exc_run, st.exc_beyond, st.quiet_alarm, st.alarm_sign,
             st.alarm_len, st.back_sum, st.clear_run, st.back_ref, st.exc_t0),
            self._p, self._ip,
        )
        self.passed += len(rest)
        self.taken += len(r) - len(rest)
        return rest


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache), not on a worker's first batch."""
    if not AVAILABLE:
        log.info("numba not installed: detector banks run vectorized only")
        return
    from trainguard.pipeline.detect.bank import DetectorBank

    bank = DetectorBank("warm-up", capacity=1)
    bank.update(np.zeros(1, np.int64), np.zeros(1), np.ones(1))
