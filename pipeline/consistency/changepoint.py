"""Change-point tests of one series against its own recent past: the numeric core of ``job_shift``.

* :class:`ShiftDetector`: a detrended, clipped CUSUM. The series' recent past (a sliding
  window of ``window`` points, ending ``lag`` points before the current one) is fitted with
  a straight line; each new point's residual against that line's extrapolation, in units
  of the noise the fit left (learned from the run itself, never a fixed ratio), feeds a
  two-sided CUSUM with reference ``k`` and threshold ``h``; a one-sided test re-baselines
  silently when the series shifts the other way (a faster step is the new normal). The
  trend absorbs what a healthy run does slowly (a falling loss, a decaying gradient
  norm); the lag keeps a shift out of the reference until the test had time to see it.
* :class:`LrJump`: the learning rate is a function of the step, smooth apart from the
  schedule's own kinks; a step whose lr departs from the straight-line extrapolation of
  the two before by more than ``jump`` (or by more than ``noise_mult`` times the
  schedule's usual step-to-step departure, learned over its first ``warm`` steps) is a
  jump.

Plain Python floats: one update is a few dozen arithmetic operations (a few microseconds),
cheaper than numpy on five-element arrays. Both classes are pure and know nothing of jobs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["LrJump", "Shift", "ShiftDetector", "ShiftParams"]

#: Weight of the newest residual in the reported level (about the last 7 points).
_RECENT = 0.25


@dataclass(frozen=True, slots=True)
class ShiftParams:
    """Settings of one :class:`ShiftDetector` (see ``ConsistencyConfig``'s job-wide section)."""

    window: int = 200
    lag: int = 30
    min_ref: int = 100
    #: CUSUM reference and threshold, in units of the learned noise.
    k: float = 1.0
    h: float = 16.0
    #: A residual beyond ``k + clip`` noise units counts as that much: no step adds more.
    clip: float = 4.0
    #: Smallest shift worth a finding (log units, ~relative): the reference is at least half.
    min_effect: float = 0.02
    #: Floor on the learned noise (log units): a flat or quantized series has a little.
    sigma_floor: float = 0.001
    up: bool = True
    down: bool = True
    #: The reference's curvature (a quadratic term's t-statistic) above this: the line
    #: does not describe the trend (a loss early in training falls like a power law), so
    #: no verdict until it does.
    curve_t: float = 2.0


@dataclass(frozen=True, slots=True)
class Shift:
    """A detected change: its direction, where it began, and its size against the noise."""

    #: +1: the series rose; -1: it fell.
    direction: int
    #: ``x`` (step) where the CUSUM's run that crossed began: the change's estimated start.
    since: float
    #: The reference's extrapolation at the detecting point, and the observed level there
    #: (the extrapolation plus the last few residuals, smoothed); in the series' units.
    expected: float
    observed: float
    #: The learned noise (standard deviation of the residuals, log units ~ relative).
    sigma: float
    #: The CUSUM at detection, in noise units (above ``h``).
    score: float

    @property
    def change(self) -> float:
        """Relative change of the level (``+0.05``: 5 % up)."""
        return self.observed / self.expected - 1.0


class ShiftDetector:
    """Detrended two-sided CUSUM over ``(x, y)`` points, ``y`` a log value (see module doc)."""

    __slots__ = ("p", "_ref", "_pending", "_ox", "_oy", "_n", "_su", "_sy", "_suu", "_suy",
                 "_syy", "_su3", "_su4", "_suuy", "_pushed", "_runs", "_recent")

    def __init__(self, params: ShiftParams) -> None:
        self.p = params
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next ``min_ref + lag`` points only build the reference."""
        self._ref: deque[tuple[float, float]] = deque()
        self._pending: deque[tuple[float, float]] = deque()
        self._ox = self._oy = 0.0
        self._n = 0
        self._su = self._sy = self._suu = self._suy = self._syy = 0.0
        self._su3 = self._su4 = self._suuy = 0.0
        self._pushed = 0
        #: Per side (up, down): the CUSUM and the x where its run began.
        self._runs = [[0.0, 0.0], [0.0, 0.0]]
        #: Residuals smoothed over the last few points: the level now, for the report.
        self._recent = 0.0

    @property
    def ready(self) -> bool:
        """The reference is big enough for verdicts."""
        return self._n >= self.p.min_ref

    def update(self, x: float, y: float) -> Shift | None:
        """Score point ``(x, y)`` (when ready), then queue it for the reference."""
        p = self.p
        shift = None
        y_in = y
        n = self._n
        if n >= p.min_ref:
            su, sy = self._su, self._sy
            mu, ybar = su / n, sy / n
            sxx = self._suu - su * mu
            sxy = self._suy - su * ybar
            slope = sxy / sxx if sxx > 0 else 0.0
            sse = max(self._syy - sy * ybar - slope * sxy, 0.0)
            sigma = max(math.sqrt(sse / (n - 2)), p.sigma_floor)
            if self._curvature(n, mu, sxx, sxy) > p.curve_t * sigma:
                self._queue(x, y)  # the line does not fit yet: learn, judge nothing
                return None
            d = x - self._ox - mu
            # The extrapolation's own uncertainty (its variance relative to the noise's).
            sp = sigma * math.sqrt(1.0 + 1.0 / n + (d * d / sxx if sxx > 0 else 0.0))
            pred = self._oy + ybar + slope * d
            e = y - pred
            self._recent += _RECENT * (e - self._recent)
            k = max(p.k * sp, p.min_effect / 2)
            bound = k + p.clip * sp
            ec = min(max(e, -bound), bound)
            up = self._step(0, x, (ec - k) / sp, pred, sigma, 1)
            down = self._step(1, x, (-ec - k) / sp, pred, sigma, -1)
            shift = up if p.up else None
            if p.down and shift is None:
                shift = down
            if shift is None and (up or down):
                # A shift the way this series may go (a faster step): the new normal.
                self.reset()
            # A wild point enters the reference only as far as the clip.
            y_in = pred + min(max(e, -p.clip * sp), p.clip * sp)
        self._queue(x, y_in)
        return shift

    def _step(self, side: int, x: float, inc: float, pred: float, sigma: float,
              direction: int) -> Shift | None:
        run = self._runs[side]
        s = run[0] + inc
        if s <= 0:
            run[0] = 0.0
            return None
        if run[0] == 0.0:
            run[1] = x
        run[0] = s
        if s <= self.p.h:
            return None
        level = pred + self._recent
        return Shift(direction=direction, since=run[1], expected=math.exp(pred),
                     observed=math.exp(level), sigma=sigma, score=s)

    def _curvature(self, n: int, mu: float, sxx: float, sxy: float) -> float:
        """|quadratic term| of the reference over its standard error, times the noise.

        The quadratic's coefficient, fitted after the line (Gram-Schmidt on u - mu), is
        sum(w y) / sum(w^2) with w = (u - mu)^2 - S2/n - (S3/S2)(u - mu); its standard
        error is sigma / sqrt(sum(w^2)). Returned: |sum(w y)| / sqrt(sum(w^2)).
        """
        if sxx <= 0:
            return 0.0
        mu2 = mu * mu
        s3 = self._su3 - 3 * mu * self._suu + 2 * n * mu2 * mu
        s4 = self._su4 - 4 * mu * self._su3 + 6 * mu2 * self._suu - 3 * n * mu2 * mu2
        ww = s4 - sxx * sxx / n - s3 * s3 / sxx
        if ww <= 0:
            return 0.0
        g = s3 / sxx
        suuy_c = self._suuy - 2 * mu * self._suy + mu2 * self._sy
        wy = suuy_c - sxx / n * self._sy - g * sxy
        return abs(wy) / math.sqrt(ww)

    def _queue(self, x: float, y: float) -> None:
        pending = self._pending
        pending.append((x, y))
        if len(pending) <= self.p.lag:
            return
        px, py = pending.popleft()
        ref = self._ref
        if not ref:
            self._ox, self._oy = px, py
        ref.append((px, py))
        self._add(px, py, 1.0)
        if len(ref) > self.p.window:
            ox, oy = ref.popleft()
            self._add(ox, oy, -1.0)
        self._pushed += 1
        if self._pushed >= self.p.window:  # bound the float error of sliding sums
            self._rebuild()

    def _add(self, x: float, y: float, sign: float) -> None:
        u, v = x - self._ox, y - self._oy
        self._n += int(sign)
        self._su += sign * u
        self._sy += sign * v
        uu = u * u
        self._suu += sign * uu
        self._suy += sign * u * v
        self._syy += sign * v * v
        self._su3 += sign * uu * u
        self._su4 += sign * uu * uu
        self._suuy += sign * uu * v

    def _rebuild(self) -> None:
        """Sums afresh from the window, with its first point as the origin."""
        self._pushed = 0
        self._ox, self._oy = self._ref[0]
        self._n = 0
        self._su = self._sy = self._suu = self._suy = self._syy = 0.0
        self._su3 = self._su4 = self._suuy = 0.0
        for x, y in self._ref:
            self._add(x, y, 1.0)


class LrJump:
    """Jumps of a learning-rate schedule beyond its own step-to-step smoothness."""

    __slots__ = ("jump", "noise_mult", "warm", "_alpha", "_prev", "_dev", "_seen")

    def __init__(self, jump: float, noise_mult: float = 10.0, span: int = 50,
                 warm: int = 10) -> None:
        self.jump = jump
        self.noise_mult = noise_mult
        #: Extrapolations measured before the first verdict (the roughness is learned).
        self.warm = warm
        self._alpha = 2.0 / (span + 1)
        self.reset()

    def reset(self) -> None:
        """Forget the schedule: the next two points only rebuild the extrapolation."""
        self._prev: list[tuple[float, float]] = []
        #: Smoothed |lr / extrapolation - 1| of healthy steps: the schedule's own roughness.
        self._dev = 0.0
        self._seen = 0

    def update(self, x: float, lr: float) -> tuple[float, float] | None:
        """``(ratio, expected)`` when ``lr`` at step ``x`` jumped off the schedule, else None.

        ``ratio`` is ``lr / expected``: above 1 a jump up, below 1 a drop. After a jump the
        extrapolation starts over from the new value.
        """
        prev = self._prev
        out = None
        if len(prev) == 2:
            (x0, l0), (x1, l1) = prev
            expected = l1 + (l1 - l0) * (x - x1) / (x1 - x0) if x1 != x0 else l1
            if expected > 0 and l1 > 0:
                ratio = lr / expected
                limit = 1.0 + max(self.jump, self.noise_mult * self._dev)
                if self._seen >= self.warm and (ratio > limit or ratio * limit < 1.0):
                    out = (ratio, expected)
                else:
                    self._seen += 1
                    alpha = max(self._alpha, 1.0 / self._seen)  # a plain mean at first
                    # Clipped: one odd step cannot blind the test for long.
                    self._dev += alpha * (min(abs(ratio - 1.0), self.jump) - self._dev)
        if out is not None:
            prev.clear()
        elif len(prev) == 2:
            prev.pop(0)
        prev.append((x, lr))
        return out
