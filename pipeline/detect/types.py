"""The detector bank's types: its validated configuration, its detections, its per-row state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trainguard.errors import ConfigError
from trainguard.pipeline.detect.changepoint import Direction
from trainguard.pipeline.detect.registry import FloatArray, IntArray, RowArrays

__all__ = [
    "DETECTOR_VERSION", "Detection", "AnomalyKind", "BankConfig", "ChangepointKind", "RowState",
]

#: Bumped whenever a change to the detectors can change what they report.
DETECTOR_VERSION = "2"

AnomalyKind = Literal["spike", "level_shift", "drift"]
ChangepointKind = Literal["cusum", "page-hinkley"]


@dataclass(frozen=True)
class BankConfig:
    """Thresholds of one metric's detector bank; validated on construction.

    Every ``z_*`` is in robust standard deviations: distance from the baseline median
    divided by the baseline scale.
    """

    #: Values in the robust baseline window (median and MAD).
    window: int = 60
    #: No verdict for a row before it has learned this many values.
    min_samples: int = 30
    #: A short excursion peaking beyond this, then returning, is a spike candidate. Real
    #: telemetry is heavy-tailed: 6 robust sigmas come by every few minutes (issue #16).
    z_spike: float = 8.0
    #: This many consecutive points beyond ``z_shift``, all on one side, are a level shift.
    #: Five, not three: a heavy-tailed or bursty series gives three in a row a few times a
    #: day, and five seconds also let the peers' points of the same ticks arrive.
    z_shift: float = 4.0
    confirm: int = 5
    #: An alarm clears after ``clear`` consecutive points back within ``z_clear``.
    z_clear: float = 2.0
    clear: int = 5
    #: An alarm that has not cleared after this many points re-baselines to the new level.
    relearn_after: int = 120
    #: Which departures count: "up" for step time, "down" for utilization, "both" for loss.
    direction: Direction = "both"
    #: Half-life, in samples, of the slow baseline that drifts are measured against.
    half_life: float = 240.0
    changepoint: ChangepointKind = "cusum"
    #: Change-point allowance (CUSUM k, Page-Hinkley delta) and threshold (h, lambda), and
    #: how many values a row must have learned before that test runs.
    cp_drift: float = 0.75
    #: 15, not 10: points clipped at ``z_shift`` add 3.25 each, so a jump needs as many
    #: points (``confirm``) to alarm here as in the point test, and bursts of noise less.
    cp_threshold: float = 15.0
    cp_after: int = 120
    #: A change-point alarm whose points were, on average, less than this far from the
    #: fast baseline (which follows a slow drift) is a drift rather than a level shift.
    z_drift: float = 1.0
    #: Floors on the scale, absolute and relative to the baseline, so that a flat series
    #: gives large but finite z. Set ``min_scale`` to the metric's resolution.
    min_scale: float = 1e-6
    min_rel_scale: float = 1e-3
    #: A departure smaller than this share of the baseline is no anomaly, however many
    #: scales it is: a GPU pegged at 100 % util that reads 97 is not news (issue #16).
    min_effect: float = 0.05
    #: Half-life (samples) of the anchor a change-point alarm's size is measured from: the
    #: slow baseline follows a drift (an hour's 20 % drift leaves it ~2 % behind), this one
    #: much less, so a drift reaches ``min_effect`` against it once it has gone that far.
    anchor_half_life: float = 1800.0
    #: Bursty series: z is measured in the row's recent volatility (a fast EWM, this
    #: half-life in samples, of the point-to-point change) when that exceeds its long-run
    #: scale by ``burst_ratio``; a burst of noise is then not a string of departures.
    vol_half_life: float = 10.0
    burst_ratio: float = 1.25
    #: Excursions that came back after peaking beyond this show a row's tails: one within
    #: ``spike_quiet_s`` before a spike candidate makes that spike the row's normal.
    z_tail: float = 6.0
    #: A spike candidate is reported only when the row had no other one for this long
    #: (event time): a row that spikes every hour has heavy tails and that is its normal,
    #: and spikes that keep coming are one episode. A new row must first stay quiet this
    #: long after its warm-up.
    spike_quiet_s: float = 3600.0
    #: Another anomaly of a row within this long of its previous one (reported or not) is
    #: the same episode: not reported again.
    episode_s: float = 900.0
    #: A departure is benign when at least this share of the row's group (its job's
    #: other GPUs or ranks), departing the same way since it began, share it: a checkpoint
    #: dip, a job phase change. 0 turns the peer test off.
    peer_share: float = 0.5
    #: Peers whose last point is older than this (event time) are not judged; a peer's
    #: departure counts from this long before the anomaly's first point.
    peer_window_s: float = 30.0
    peer_slack_s: float = 5.0
    #: A peer also departs when its recent mean z against its slow baseline (a fast EWM,
    #: half-life ``vol_half_life``) is this far on the same side: a job-wide change too
    #: small for the point test, which each row's change-point test finds at its own time.
    peer_z: float = 1.0

    @property
    def vol_alpha(self) -> float:
        """The weight of a new point in the volatility and drift EWMs (``vol_half_life``)."""
        return 1.0 - 0.5 ** (1.0 / self.vol_half_life)

    def __post_init__(self) -> None:
        if self.window < 3:
            raise ConfigError(f"window must be >= 3 values, got {self.window}")
        if not 1 <= self.min_samples <= self.window:
            raise ConfigError(
                f"min_samples must be within 1..window ({self.window}), got {self.min_samples}"
            )
        if not 0 < self.z_clear < self.z_shift <= self.z_spike:
            raise ConfigError(
                "thresholds must satisfy 0 < z_clear < z_shift <= z_spike, got "
                f"z_clear={self.z_clear}, z_shift={self.z_shift}, z_spike={self.z_spike}"
            )
        if self.confirm < 2:
            raise ConfigError(f"confirm must be >= 2 (1 would allow no spikes), got {self.confirm}")
        if self.clear < 1:
            raise ConfigError(f"clear must be >= 1 point, got {self.clear}")
        if self.relearn_after < self.window:
            raise ConfigError(
                f"relearn_after ({self.relearn_after}) must be >= window ({self.window}), "
                "so the new baseline holds only values seen after the change"
            )
        if self.cp_after < self.min_samples:
            raise ConfigError(
                f"cp_after ({self.cp_after}) must be >= min_samples ({self.min_samples})"
            )
        if self.direction not in ("both", "up", "down"):
            raise ConfigError(f"unknown direction {self.direction!r}; expected both, up or down")
        if self.changepoint not in ("cusum", "page-hinkley"):
            raise ConfigError(
                f"unknown changepoint {self.changepoint!r}; expected cusum or page-hinkley"
            )
        if not (self.half_life > 0 and self.cp_drift >= 0 and self.cp_threshold > 0):
            raise ConfigError(
                "half_life and cp_threshold must be > 0 and cp_drift >= 0, got "
                f"{self.half_life}, {self.cp_threshold}, {self.cp_drift}"
            )
        if not (min(self.min_effect, self.spike_quiet_s, self.episode_s,
                    self.peer_slack_s) >= 0 and self.peer_window_s > 0
                and self.anchor_half_life > 0):
            raise ConfigError(
                "min_effect, spike_quiet_s, episode_s and peer_slack_s must be >= 0, "
                "peer_window_s and anchor_half_life > 0, got "
                f"{self.min_effect}, {self.spike_quiet_s}, {self.episode_s}, "
                f"{self.peer_slack_s}, {self.peer_window_s}, {self.anchor_half_life}"
            )
        if not (self.vol_half_life > 0 and self.burst_ratio >= 1):
            raise ConfigError(
                "vol_half_life must be > 0 and burst_ratio >= 1, got "
                f"{self.vol_half_life}, {self.burst_ratio}"
            )
        if not self.z_shift <= self.z_tail <= self.z_spike:
            raise ConfigError(
                f"z_tail must be within z_shift..z_spike ({self.z_shift}..{self.z_spike}), "
                f"got {self.z_tail}"
            )
        if not self.peer_z > 0:
            raise ConfigError(f"peer_z must be > 0, got {self.peer_z}")
        if not 0 <= self.peer_share <= 1:
            raise ConfigError(f"peer_share must be within 0..1, got {self.peer_share}")
        if not (self.min_scale > 0 and self.min_rel_scale >= 0 and self.z_drift >= 0):
            raise ConfigError(
                "min_scale must be > 0, min_rel_scale and z_drift >= 0, got "
                f"{self.min_scale}, {self.min_rel_scale}, {self.z_drift}"
            )


@dataclass(frozen=True, slots=True)
class Detection:
    """One departure of one row from its baseline, as found by a detector bank.

    The bank's output, in row numbers; the worker turns it into the wire record
    :class:`~trainguard.schemas.records.Anomaly`.
    """

    row: int
    metric: str
    kind: AnomalyKind
    #: Event time of the point that confirmed the anomaly.
    ts: float
    #: Event time of the first anomalous point (the spike, or the estimated change point).
    first_seen: float
    #: The observed value: the spike's peak, or the point that confirmed a shift or drift.
    value: float
    #: The baseline it departed from, and the scale its score is measured in.
    baseline: float
    scale: float
    #: Signed deviation in scales: ``(value - baseline) / scale``.
    score: float
    #: Values in the baseline window when it fired.
    window: int
    detector: str
    version: str = DETECTOR_VERSION


class RowState(RowArrays):
    """A detector bank's own per-row state: event time, alarm, open excursion and its peak.

    Part of the snapshot layout (``row.*`` in :meth:`DetectorBank.state`).
    """

    _FIELDS = {
        "last_ts": (np.float64, -np.inf),  # event time of the last point taken
        # 0 none, 1 spike, 2 level shift (run), 3 level shift / 4 drift (change point)
        "alarm": (np.int8, 0),
        "alarm_len": (np.int64, 0),  # points since it fired, toward relearn_after
        "clear_run": (np.int64, 0),  # consecutive points back within z_clear
        "back_ref": (np.float64, 0.0),  # signed allowance of the mirror test (cp alarms)
        "back_sum": (np.float64, 0.0),
        "exc_open": (np.bool_, False),  # an excursion beyond z_shift has not ended
        "exc_t0": (np.float64, np.nan),
        "exc_run": (np.int64, 0),  # its consecutive points beyond z_shift
        "exc_beyond": (np.int64, 0),  # all its points beyond z_shift
        "peak_e": (np.float64, np.nan),  # its farthest point: reported if it is a spike
        "peak_x": (np.float64, np.nan),
        "peak_base": (np.float64, np.nan),
        "peak_scale": (np.float64, np.nan),
        "exc_sign": (np.int8, 0),  # the side of its current run beyond z_shift
        "alarm_sign": (np.int8, 0),  # the side of the alarm
        "last_z": (np.float64, np.nan),  # signed z of the last point (for peers)
        "dep_up": (np.float64, -np.inf),  # last time beyond z_shift upward (for peers)
        "dep_down": (np.float64, -np.inf),
        "spike_last": (np.float64, np.inf),  # last tail excursion (inf: still warming up)
        "episode_last": (np.float64, -np.inf),  # last anomaly, reported or not
        "group": (np.int64, -1),  # the row's peer group (its job); -1 none
        "shared_at": (np.float64, -np.inf),  # last departure its peers shared, and side
        # (the side only if it was a change-point alarm)
        "shared_sign": (np.int8, 0),
        "relearn_at": (np.float64, -np.inf),  # last re-baseline (a new normal), and side
        "relearn_sign": (np.int8, 0),
        "quiet_alarm": (np.bool_, False),  # its alarm's detection was the peers' (shared)
        "drift_z": (np.float64, 0.0),  # recent mean z against the slow baseline (peers)
        "vol": (np.float64, 0.0),  # recent volatility: EWM of |x - previous x|
        "prev_x": (np.float64, np.nan),
    }
    last_ts: FloatArray
    alarm: np.ndarray[Any, np.dtype[np.int8]]
    alarm_len: IntArray
    clear_run: IntArray
    back_ref: FloatArray
    back_sum: FloatArray
    exc_open: np.ndarray[Any, np.dtype[np.bool_]]
    exc_t0: FloatArray
    exc_run: IntArray
    exc_beyond: IntArray
    peak_e: FloatArray
    peak_x: FloatArray
    peak_base: FloatArray
    peak_scale: FloatArray
    exc_sign: np.ndarray[Any, np.dtype[np.int8]]
    alarm_sign: np.ndarray[Any, np.dtype[np.int8]]
    last_z: FloatArray
    dep_up: FloatArray
    dep_down: FloatArray
    spike_last: FloatArray
    episode_last: FloatArray
    group: IntArray
    shared_at: FloatArray
    shared_sign: np.ndarray[Any, np.dtype[np.int8]]
    relearn_at: FloatArray
    relearn_sign: np.ndarray[Any, np.dtype[np.int8]]
    quiet_alarm: np.ndarray[Any, np.dtype[np.bool_]]
    drift_z: FloatArray
    vol: FloatArray
    prev_x: FloatArray
