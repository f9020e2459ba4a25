"""Cross-rank and cross-node consistency checks: ranks, replicas and nodes against each other.

Where the baselines compare every GPU and rank with its own history, these checks compare
them with each other at the same step or tick, and name the rank or node that departs:
replicas whose parameters diverge, a rank whose loss or gradient leaves its peers', a slow
or idle node, a missing or trailing rank, a checkpoint modified between save and load.
Plain Python and numpy, no Faust: :class:`ConsistencyStage` takes decoded records and
returns :class:`~trainguard.schemas.records.Finding` records. The checks' names are
the schema's registry, :data:`~trainguard.schemas.records.CheckName`.

Layout: ``assembler`` gathers steps from late and out-of-order records; ``columns`` turns a
closed step into arrays; ``agreement``, ``fingerprints``, ``peers`` and ``presence`` check
steps; ``trajectory`` (with ``changepoint``) follows the whole job against its own recent
past (``job_shift``: a change made to every rank alike); ``devices`` checks GPU samples;
``checkpoints`` checks loads against saves;
``findings`` turns failed checks into findings once; ``job`` and ``stage`` wire them.
"""

from trainguard.pipeline.consistency.config import (
    CHECK_VERSION,
    HW_SLOWDOWN_BITS,
    ConsistencyConfig,
)
from trainguard.pipeline.consistency.findings import Fault, FindingTracker, finding_id
from trainguard.pipeline.consistency.stage import ConsistencyStage

__all__ = [
    "CHECK_VERSION",
    "HW_SLOWDOWN_BITS",
    "ConsistencyConfig",
    "ConsistencyStage",
    "Fault",
    "FindingTracker",
    "finding_id",
]
