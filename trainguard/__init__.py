"""trainguard: streaming telemetry that watches GPU training clusters for silent faults."""

__version__ = "0.1.0"
__all__ = ["__version__"]
