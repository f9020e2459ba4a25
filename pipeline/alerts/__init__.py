"""Alerts stage: findings in, page-worthy alert state changes out.

The core (:class:`AlertLifecycle`) is plain Python in event time, free of Faust and
Kafka, so it can be unit-tested and replayed; the worker glue feeds it.
"""

from trainguard.pipeline.alerts.config import AlertLifecycleConfig, Silence
from trainguard.pipeline.alerts.lifecycle import (
    AlertLifecycle,
    finding_fingerprint,
)

__all__ = [
    "AlertLifecycleConfig",
    "AlertLifecycle",
    "Silence",
    "finding_fingerprint",
]
