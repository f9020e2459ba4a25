"""Key files: the fleet secrets (workers, enrolment) and one node's key (its agent).

Both are small JSON documents written with mode 0600 and refused when anyone but their
owner may read them (group or other bits set): a key readable by every user of a node is
a key every user of the node holds. Keys come from files only, never from the command
line, where ``ps`` shows them.

- fleet secrets: ``{"format": "trainguard-fleet-secrets/1", "current": HEX,
  "previous": HEX | null}``; ``rotate`` moves ``current`` to ``previous``;
- a node key: ``{"format": "trainguard-node-key/1", "node": NAME, "kid": KID, "key": HEX}``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainguard.errors import ConfigError
from trainguard.schemas.auth import SECRET_BYTES, FleetSecret, NodeKey, derive_node_key

__all__ = [
    "enrol_node",
    "init_fleet_secrets",
    "read_fleet_secrets",
    "read_node_key",
    "rotate_fleet_secrets",
    "write_node_key",
]

_FLEET_FORMAT = "trainguard-fleet-secrets/1"
_NODE_FORMAT = "trainguard-node-key/1"

Random = Callable[[int], bytes]


def _read_private(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, which only its owner may read."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it: {exc}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{what} {path} has mode {mode:04o}; expected 0600 or 0400 (only "
                          f"its owner may read it: chmod 600 {path})")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _hex(doc: dict[str, Any], field: str, path: Path, what: str) -> bytes:
    value = doc.get(field)
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{what} {path}: {field!r} must be hex text, got "
                          f"{type(value).__name__}") from None


def read_fleet_secrets(path: Path) -> tuple[FleetSecret, ...]:
    """The fleet secrets in ``path``: the current one first, then the previous (if any)."""
    what = "fleet secret file"
    doc = _read_private(path, what)
    if doc.get("format") != _FLEET_FORMAT:
        raise ConfigError(f"{what} {path}: format {doc.get('format')!r}; expected "
                          f"{_FLEET_FORMAT!r} (made by `trainguard keys init`)")
    try:
        current = FleetSecret(_hex(doc, "current", path, what))
        previous = (FleetSecret(_hex(doc, "previous", path, what))
                    if doc.get("previous") is not None else None)
    except ValueError as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None
    return (current,) if previous is None else (current, previous)


def _write_fleet(path: Path, current: FleetSecret, previous: FleetSecret | None) -> None:
    _write_private(path, {"format": _FLEET_FORMAT, "current": current.secret.hex(),
                          "previous": previous.secret.hex() if previous else None})


def init_fleet_secrets(path: Path, *, force: bool = False,
                       random: Random = os.urandom) -> FleetSecret:
    """Create ``path`` with a new fleet secret; an existing file is kept unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"fleet secret file {path} exists; use `keys rotate` to replace "
                          "its secret (or --force to discard it)")
    secret = FleetSecret(random(SECRET_BYTES))
    _write_fleet(path, secret, None)
    return secret


def rotate_fleet_secrets(path: Path, *,
                         random: Random = os.urandom) -> tuple[FleetSecret, FleetSecret]:
    """A new current secret; the old current one becomes ``previous`` (the older is dropped).

    Returns (new, previous). Workers accept both until the next rotation: re-enrol every
    node in between.
    """
    current = read_fleet_secrets(path)[0]
    new = FleetSecret(random(SECRET_BYTES))
    _write_fleet(path, new, current)
    return new, current


def enrol_node(fleet_path: Path, node: str, out: Path) -> NodeKey:
    """Derive ``node``'s key from the current fleet secret and write it to ``out``."""
    key = derive_node_key(read_fleet_secrets(fleet_path)[0], node)
    write_node_key(out, key)
    return key


def write_node_key(path: Path, key: NodeKey) -> None:
    """Write one node's key file (mode 0600)."""
    _write_private(path, {"format": _NODE_FORMAT, "node": key.node, "kid": key.kid,
                          "key": key.key.hex()})


def read_node_key(path: Path) -> NodeKey:
    """The node key in ``path`` (written by ``trainguard keys enrol``)."""
    what = "node key file"
    doc = _read_private(path, what)
    if doc.get("format") != _NODE_FORMAT:
        raise ConfigError(f"{what} {path}: format {doc.get('format')!r}; expected "
                          f"{_NODE_FORMAT!r} (made by `trainguard keys enrol`)")
    node, kid = doc.get("node"), doc.get("kid")
    if not isinstance(node, str) or not node or not isinstance(kid, str) or not kid:
        raise ConfigError(f"{what} {path}: 'node' and 'kid' must be non-empty text")
    key = _hex(doc, "key", path, what)
    if len(key) != 32:
        raise ConfigError(f"{what} {path}: the key must be 32 bytes, got {len(key)}")
    return NodeKey(node=node, kid=kid, key=key)
