"""The constrained value types of the wire contract, shared by every record module.

Bounds live in the types, so they appear in the generated JSON Schema and a value the
store would reject is a dead letter at decode time instead of a poisoned insert.
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import Meta

#: The version of the wire contract this code writes and reads.
SCHEMA_VERSION = 1

# Reusable constrained types. Their bounds appear in the generated JSON Schema too.
EpochSeconds = Annotated[float, Meta(ge=0, description="Unix epoch seconds, UTC, event time")]
Percent = Annotated[float, Meta(ge=0, le=100)]
# Integers are bounded by the ClickHouse column that stores them, so a value the store
# would reject is a dead letter at decode time instead of a poisoned insert.
NonNegInt = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # msgspec bounds stop at int64
UInt32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
UInt16 = Annotated[int, Meta(ge=0, le=2**16 - 1)]
UInt8 = Annotated[int, Meta(ge=0, le=255)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
#: The names an attacker could pick to grow state or smuggle text into queries, pages and
#: dashboards: nodes, jobs and clusters. Host names, Slurm/Kubernetes job ids and paths fit.
NAME_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$"
#: The pattern is not msgspec's to check (one regex call per name per record, a third of a
#: step batch's decode): :mod:`trainguard.schemas.names` checks it once per distinct name
#: for every decoder of the codec, with the same verdict and message. It stays in the JSON
#: Schema; ``extra`` marks the type for that check.
STRICT_NAME_META: Final = Meta(min_length=1, max_length=256,
                               extra_json_schema={"pattern": NAME_PATTERN},
                               extra={"pattern": NAME_PATTERN})
StrictName = Annotated[str, STRICT_NAME_META]
#: A hash as hex or base64 text (checksums, fingerprints): SHA-512 hex is 128 characters.
MAX_HASH_CHARS: Final = 128
Hash = Annotated[str, Meta(max_length=MAX_HASH_CHARS)]
#: A hex digest a trainer reports or the agent's witness computes.
HexDigest = Annotated[str, Meta(min_length=8, max_length=128, pattern="^[0-9a-fA-F]+$")]
#: A file or directory path (Linux allows 4096 bytes).
FilePath = Annotated[str, Meta(min_length=1, max_length=4096)]
#: Changed files one witness report names (it counts them all).
MAX_CHANGED_FILES: Final = 64
#: GPUs one node reports in one sample batch (8 on most nodes, 16 on the largest).
MAX_GPUS_PER_BATCH: Final = 64
#: Free text a device or agent reports (model, UUID, driver version).
ShortText = Annotated[str, Meta(max_length=256)]
Version = Annotated[int, Meta(ge=1, description="wire contract version")]
