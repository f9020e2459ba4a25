"""The one root exception of trainguard, and the few families under it.

Every error a user can cause (bad configuration, an unreachable broker, a store that
rejects a query) is a :class:`TrainguardError`, so entry points can print one clear
line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CollectorError",
    "ConfigError",
    "StoreError",
    "TrainguardError",
]


class TrainguardError(Exception):
    """Root of every error trainguard raises on purpose."""


class ConfigError(TrainguardError):
    """A setting is missing or has a value trainguard cannot use."""


class BrokerError(TrainguardError):
    """The Kafka broker could not be fetched, started, reached or stopped."""


class CollectorError(TrainguardError):
    """A telemetry source (NVML, a step source) cannot be read."""


class StoreError(TrainguardError):
    """The ClickHouse store could not be opened, migrated, written or read."""
