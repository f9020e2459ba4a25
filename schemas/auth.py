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
from typing import Final, NamedTuple

__all__ = [
    "HEADER_KID",
    "HEADER_MAC",
    "HEADER_NODE",
    "MAC_BYTES",
    "SECRET_BYTES",
    "FleetSecret",
    "FleetSigner",
    "HeaderMap",
    "Headers",
    "Hmac",
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


def _framed(topic: str, msg_key: bytes | None, value: bytes | None) -> bytes:
    """What the MAC covers: topic, key and value, with lengths that keep them apart."""
    k = msg_key or b""
    return b"".join((_MAC_PREFIX, topic.encode(), b"\x00", len(k).to_bytes(4, "big"), k,
                     value or b""))


def mac(key: bytes, topic: str, msg_key: bytes | None, value: bytes | None) -> bytes:
    """The MAC of one message: over its topic, key and value (lengths keep them apart)."""
    return hmac.digest(key, _framed(topic, msg_key, value), "sha256")[:MAC_BYTES]


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Hmac:
    """HMAC-SHA256 under one key with its inner and outer states computed once (RFC 2104).

    Equal to :func:`hmac.digest`; it skips the per-call key setup, which costs more than
    hashing a 1 KB message (what the worker pays once per node, not once per message).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\x00")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` (32 bytes)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def sign(node_key: NodeKey, topic: str, msg_key: bytes | None, value: bytes | None) -> Headers:
    """The headers that authenticate one message as ``node_key``'s node."""
    return [(HEADER_NODE, node_key.node.encode()), (HEADER_KID, node_key.kid.encode()),
            (HEADER_MAC, mac(node_key.key, topic, msg_key, value))]


HeaderMap = Mapping[str, bytes | None]
_NO_HEADERS: HeaderMap = {}


def header_map(headers: Iterable[tuple[str, bytes | None]] | HeaderMap | None) -> HeaderMap:
    """A message's headers by name (the last of a repeated name wins, as in a dict)."""
    if not headers:
        return _NO_HEADERS
    if isinstance(headers, Mapping):
        return headers
    return dict(headers)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


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


class Verdict(NamedTuple):
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
    keeps the previous one until every node is re-enrolled). Each node's HMAC state is
    derived once and cached (at most ``max_cached``; the cache starts over beyond it).
    """

    def __init__(self, secrets: Sequence[FleetSecret], *, max_cached: int = 100_000) -> None:
        if not secrets:
            raise ValueError("a verifier needs at least one fleet secret")
        self._secrets = {s.kid.encode(): s for s in secrets}
        self._cache: dict[tuple[bytes, bytes], tuple[Hmac, str]] = {}
        self._prefixes: dict[str, bytes] = {}
        self._max_cached = max_cached
        #: Messages verified with each key id: shows when a rotation's old id falls silent.
        self.by_kid: dict[str, int] = {s.kid: 0 for s in secrets}

    @property
    def kids(self) -> tuple[str, ...]:
        """The accepted key ids, current first."""
        return tuple(self.by_kid)

    def verify(self, topic: str, msg_key: bytes | None, value: bytes | None,
               headers: HeaderMap) -> Verdict:
        """Who signed this message (see :class:`Verdict`); ``headers`` from :func:`header_map`."""
        raw_node, raw_kid, tag = (headers.get(HEADER_NODE), headers.get(HEADER_KID),
                                  headers.get(HEADER_MAC))
        if not raw_node or not raw_kid or not tag:
            return Verdict(None, _text(raw_node), "no_mac")
        cached = self._cache.get((raw_kid, raw_node)) or self._derive(raw_kid, raw_node)
        if cached is None:
            return Verdict(None, _text(raw_node), "unknown_kid")
        state, kid = cached
        prefix = self._prefixes.get(topic)
        if prefix is None:
            prefix = self._prefixes[topic] = _MAC_PREFIX + topic.encode() + b"\x00"
        k = msg_key or b""
        data = b"".join((prefix, len(k).to_bytes(4, "big"), k, value or b""))
        if not hmac.compare_digest(state.digest(data)[:MAC_BYTES], tag):
            return Verdict(None, _text(raw_node), "bad_mac")
        self.by_kid[kid] += 1
        node = raw_node.decode("utf-8", "replace")
        return Verdict(node, node)

    def _derive(self, raw_kid: bytes, raw_node: bytes) -> tuple[Hmac, str] | None:
        fleet = self._secrets.get(raw_kid)
        if fleet is None:
            return None
        if len(self._cache) >= self._max_cached:
            self._cache.clear()
        key = derive_node_key(fleet, raw_node.decode("utf-8", "replace")).key
        entry = self._cache[(raw_kid, raw_node)] = (Hmac(key), fleet.kid)
        return entry
