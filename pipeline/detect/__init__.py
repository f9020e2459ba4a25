"""Numeric core of anomaly detection: per-entity baselines and change tests over numpy rows.

Plain numpy, no Faust or Kafka: the stream workers feed :class:`DetectorBank` (one per
metric) with batches of ``(row, value, event time)``, where rows come from an
:class:`EntityRegistry`, and turn the :class:`Detection` s it returns into wire anomalies
and alerts.
"""

from trainguard.pipeline.detect.bank import STATE_FORMAT, DetectorBank
from trainguard.pipeline.detect.baseline import Ewm, RobustWindow, unique_rounds
from trainguard.pipeline.detect.changepoint import ChangeAlarms, Cusum, Direction, PageHinkley
from trainguard.pipeline.detect.registry import EntityRegistry
from trainguard.pipeline.detect.types import DETECTOR_VERSION, AnomalyKind, BankConfig, Detection

__all__ = [
    "DETECTOR_VERSION",
    "STATE_FORMAT",
    "Detection",
    "AnomalyKind",
    "BankConfig",
    "ChangeAlarms",
    "Cusum",
    "DetectorBank",
    "Direction",
    "EntityRegistry",
    "Ewm",
    "PageHinkley",
    "RobustWindow",
    "unique_rounds",
]
