"""Per-node message authentication: keys derived from a fleet secret, a MAC in Kafka headers.

Part of the wire contract, shared by agents (which sign) and workers (which verify):

- the **fleet secret** (32 random bytes) is held by the workers and the enrolment tool
  only; its **key id** (``kid``) is a hash of it, so a key never travels, only its id;
- a **node key** is ``HMAC-SHA256(fleet_secret, "trainguard node key v1|" + node)``; a node
  holds its own key and nothing else, so it cannot sign as another node, and a worker
  derives any node's key from the secret without a key table;
- every message carries three headers: ``tg.node`` (the node that signed), ``tg.kid``
  (which fleet secret its key comes from) and ``tg.mac``, the first 16 bytes of
  ``HMAC-SHA256(node_key, "tg1" NUL topic NUL len(key) key value)``: bound to the topic,
  the message key and the value, so a signed message cannot be moved to another topic.

During a rotation the workers hold the current and the previous secret and accept both
key ids. Comparisons are constant-time (:func:`hmac.compare_digest`). A MAC does not stop
a node from replaying its *own* earlier messages; the records' event time against the
broker's ``LogAppendTime`` and the idempotent tables bound that.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER_KID",
    "HEADER_MAC",
    "HEADER_NODE",
    "MAC_BYTES",
    "SECRET_BYTES",
    "FleetSecret",
    "FleetSigner",
    "Headers",
    "NodeKey",
    "Verdict",
    "Verifier",
    "derive_node_key",
    "header_map",
    "mac",
    "sign",
]

HEADER_NODE: Final = "tg.node"
HEADER_KID: Final = "tg.kid"
HEADER_MAC: Final = "tg.mac"
#: HMAC-SHA256 truncated to 128 bits (RFC 2104 allows truncation to half the output).
MAC_BYTES: Final = 16
#: Fleet secrets are this many random bytes.
SECRET_BYTES: Final = 32

_NODE_KEY_LABEL = b"trainguard node key v1|"
_KID_LABEL = b"trainguard kid v1|"
_MAC_PREFIX = b"tg1\x00"

#: Kafka headers as kafka-python and aiokafka take them.
Headers = list[tuple[str, bytes]]


def _kid(secret: bytes) -> str:
    return hashlib.sha256(_KID_LABEL + secret).hexdigest()[:12]


@dataclass(frozen=True, repr=False)
class FleetSecret:
    """One fleet secret and its key id; never printed."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError(f"a fleet secret must be at least 16 bytes, got {len(self.secret)}")

    @property
    def kid(self) -> str:
        """The key id: a hash of the secret (12 hex characters), safe to show and send."""
        return _kid(self.secret)

    def __repr__(self) -> str:
        return f"FleetSecret(kid={self.kid!r}, secret=***)"


@dataclass(frozen=True, repr=False)
class NodeKey:
    """The key one node signs with, and the node and key id it belongs to; never printed."""

    node: str
    kid: str
    key: bytes

    def __repr__(self) -> str:
        return f"NodeKey(node={self.node!r}, kid={self.kid!r}, key=***)"


def derive_node_key(fleet: FleetSecret, node: str) -> NodeKey:
    """``node``'s key under ``fleet``: what enrolment writes and what workers recompute."""
    key = hmac.digest(fleet.secret, _NODE_KEY_LABEL + node.encode(), "sha256")
    return NodeKey(node=node, kid=fleet.kid, key=key)


def mac(key: bytes, topic: str, msg_key: bytes | None, value: bytes | None) -> bytes:
    """The MAC of one message: over its topic, key and value (lengths keep them apart)."""
    k = msg_key or b""
    data = b"".join((_MAC_PREFIX, topic.encode(), b"\x00", len(k).to_bytes(4, "big"), k,
                     value or b""))
    return hmac.digest(key, data, "sha256")[:MAC_BYTES]


def sign(node_key: NodeKey, topic: str, msg_key: bytes | None, value: bytes | None) -> Headers:
    """The headers that authenticate one message as ``node_key``'s node."""
    return [(HEADER_NODE, node_key.node.encode()), (HEADER_KID, node_key.kid.encode()),
            (HEADER_MAC, mac(node_key.key, topic, msg_key, value))]


def header_map(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
               ) -> dict[str, bytes]:
    """The authentication headers of a message (the first of each name), as a dict."""
    out: dict[str, bytes] = {}
    if not headers:
        return out
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name in (HEADER_NODE, HEADER_KID, HEADER_MAC) and name not in out and value:
            out[name] = bytes(value)
    return out


class FleetSigner:
    """Signs as any node of the fleet: for the simulator, demo and load tools only.

    A real node gets its own :class:`NodeKey` (``trainguard keys enrol``), never this.
    """

    def __init__(self, fleet: FleetSecret) -> None:
        self._fleet = fleet
        self._keys: dict[str, NodeKey] = {}

    def key_for(self, node: str) -> NodeKey:
        """``node``'s key (derived once)."""
        key = self._keys.get(node)
        if key is None:
            key = self._keys[node] = derive_node_key(self._fleet, node)
        return key

    def headers(self, node: str, topic: str, msg_key: bytes | None,
                value: bytes | None) -> Headers:
        """The headers that authenticate one message as ``node``."""
        return sign(self.key_for(node), topic, msg_key, value)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of verifying one message: the authenticated node, or why not."""

    #: The node whose key made the MAC; ``None`` when the message is not authenticated.
    node: str | None
    #: The node the ``tg.node`` header claims (``None`` without one).
    claimed: str | None
    #: Why it is not authenticated (``None`` when it is): ``no_mac``, ``unknown_kid``,
    #: ``bad_mac``.
    why: str | None = None


class Verifier:
    """Checks a message's MAC against keys derived from the current and previous secrets.

    ``secrets`` holds the current secret first; every one of them is accepted (a rotation
    keeps the previous one until every node is re-enrolled). Derived node keys are cached
    (at most ``max_cached``; the cache starts over beyond it).
    """

    def __init__(self, secrets: Sequence[FleetSecret], *, max_cached: int = 100_000) -> None:
        if not secrets:
            raise ValueError("a verifier needs at least one fleet secret")
        self._secrets = {s.kid: s for s in secrets}
        self._cache: dict[tuple[str, str], bytes] = {}
        self._max_cached = max_cached
        #: Messages verified with each key id: shows when a rotation's old id falls silent.
        self.by_kid: dict[str, int] = dict.fromkeys(self._secrets, 0)

    @property
    def kids(self) -> tuple[str, ...]:
        """The accepted key ids, current first."""
        return tuple(self._secrets)

    def verify(self, topic: str, msg_key: bytes | None, value: bytes | None,
               headers: Mapping[str, bytes]) -> Verdict:
        """Who signed this message (see :class:`Verdict`); ``headers`` from :func:`header_map`."""
        raw_node, raw_kid, tag = (headers.get(HEADER_NODE), headers.get(HEADER_KID),
                                  headers.get(HEADER_MAC))
        claimed = raw_node.decode("utf-8", "replace") if raw_node else None
        if claimed is None or raw_kid is None or tag is None:
            return Verdict(None, claimed, "no_mac")
        kid = raw_kid.decode("ascii", "replace")
        key = self._key(kid, claimed)
        if key is None:
            return Verdict(None, claimed, "unknown_kid")
        if not hmac.compare_digest(mac(key, topic, msg_key, value), tag):
            return Verdict(None, claimed, "bad_mac")
        self.by_kid[kid] += 1
        return Verdict(claimed, claimed)

    def _key(self, kid: str, node: str) -> bytes | None:
        cached = self._cache.get((kid, node))
        if cached is not None:
            return cached
        fleet = self._secrets.get(kid)
        if fleet is None:
            return None
        if len(self._cache) >= self._max_cached:
            self._cache.clear()
        key = self._cache[(kid, node)] = derive_node_key(fleet, node).key
        return key
