"""Generate the JSON Schema files of the wire contract from the msgspec Structs.

Run ``python -m trainguard.schemas.generate`` after changing ``schemas/records.py`` and commit the
result; ``tests/schemas/test_jsonschema_drift.py`` fails while they disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from trainguard.schemas.records import (
    Alert,
    Anomaly,
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
    WitnessReport,
)

__all__ = ["JSON_DIR", "render_all", "write_all"]

JSON_DIR = Path(__file__).parent / "json"

_RECORDS: dict[str, type] = {
    "gpu_sample_batch": GpuSampleBatch,
    "step_batch": StepBatch,
    "step": StepRecord,
    "heartbeat": Heartbeat,
    "checkpoint": CheckpointEvent,
    "anomaly": Anomaly,
    "finding": Finding,
    "alert": Alert,
    "witness": WitnessReport,
}


def render_all() -> dict[str, str]:
    """Return ``{file name: JSON text}`` for every wire record."""
    out: dict[str, str] = {}
    for name, record_type in _RECORDS.items():
        schema = msgspec.json.schema(record_type)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://trainguard.dev/schemas/{name}.v1.schema.json"
        out[f"{name}.v1.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all():
        print(p)
