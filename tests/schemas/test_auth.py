"""Message MACs: a node signs as itself only; a message verifies only unchanged, on its topic."""

from __future__ import annotations

import hmac

import pytest

from trainguard.schemas.auth import (
    HEADER_KID,
    HEADER_MAC,
    HEADER_NODE,
    MAC_BYTES,
    FleetSecret,
    FleetSigner,
    Hmac,
    Verifier,
    derive_node_key,
    header_map,
    mac,
    sign,
)

FLEET = FleetSecret(b"s" * 32)
OLD = FleetSecret(b"o" * 32)
TOPIC = "tg.steps.v1"
VALUE = b'{"kind":"step_batch","node":"node-a"}'


def _verify(verifier: Verifier, headers: list[tuple[str, bytes]], topic: str = TOPIC,
            key: bytes = b"job-1", value: bytes = VALUE):
    return verifier.verify(topic, key, value, header_map(headers))


def test_a_signed_message_verifies_as_its_node() -> None:
    headers = sign(derive_node_key(FLEET, "node-a"), TOPIC, b"job-1", VALUE)
    verdict = _verify(Verifier([FLEET]), headers)
    assert (verdict.node, verdict.claimed, verdict.why) == ("node-a", "node-a", None)
    assert [name for name, _ in headers] == [HEADER_NODE, HEADER_KID, HEADER_MAC]
    assert len(dict(headers)[HEADER_MAC]) == MAC_BYTES


def test_a_node_key_cannot_sign_as_another_node() -> None:
    headers = sign(derive_node_key(FLEET, "node-a"), TOPIC, b"job-1", VALUE)
    forged = [(HEADER_NODE, b"node-b"), *headers[1:]]
    verdict = _verify(Verifier([FLEET]), forged)
    assert (verdict.node, verdict.claimed, verdict.why) == (None, "node-b", "bad_mac")


@pytest.mark.parametrize("change", [
    {"topic": "tg.gpu-samples.v1"},
    {"value": VALUE.replace(b"node-a", b"node-b")},
    {"value": VALUE + b" "},
    {"key": b"job-2"},
])
def test_a_message_moved_to_another_topic_or_altered_fails(change: dict[str, object]) -> None:
    headers = sign(derive_node_key(FLEET, "node-a"), TOPIC, b"job-1", VALUE)
    verdict = _verify(Verifier([FLEET]), headers, **change)  # type: ignore[arg-type]
    assert verdict.node is None and verdict.why == "bad_mac"


def test_bytes_moved_between_key_and_value_change_the_mac() -> None:
    key = derive_node_key(FLEET, "n").key
    assert mac(key, TOPIC, b"ab", b"c") != mac(key, TOPIC, b"a", b"bc")
    assert mac(key, "t1", b"", b"x") != mac(key, "t", b"1", b"x")


def test_a_message_without_headers_is_no_mac_and_names_no_claim() -> None:
    verdict = _verify(Verifier([FLEET]), [])
    assert (verdict.node, verdict.claimed, verdict.why) == (None, None, "no_mac")


def test_a_key_id_the_workers_do_not_hold_is_unknown_kid() -> None:
    headers = sign(derive_node_key(FleetSecret(b"x" * 32), "node-a"), TOPIC, b"job-1", VALUE)
    assert _verify(Verifier([FLEET]), headers).why == "unknown_kid"


def test_during_a_rotation_the_previous_secret_is_accepted_and_counted_by_kid() -> None:
    old_headers = sign(derive_node_key(OLD, "node-a"), TOPIC, b"job-1", VALUE)
    new_headers = sign(derive_node_key(FLEET, "node-a"), TOPIC, b"job-1", VALUE)
    both = Verifier([FLEET, OLD])
    assert _verify(both, old_headers).node == "node-a"
    assert _verify(both, new_headers).node == "node-a"
    assert both.by_kid == {FLEET.kid: 1, OLD.kid: 1} and both.kids == (FLEET.kid, OLD.kid)
    assert _verify(Verifier([FLEET]), old_headers).why == "unknown_kid"


def test_node_keys_differ_per_node_and_per_secret_and_are_deterministic() -> None:
    a, b = derive_node_key(FLEET, "node-a"), derive_node_key(FLEET, "node-b")
    assert a.key != b.key and a.key == derive_node_key(FLEET, "node-a").key
    assert a.key != derive_node_key(OLD, "node-a").key and a.kid == FLEET.kid != OLD.kid


def test_keys_and_secrets_never_print() -> None:
    key = derive_node_key(FLEET, "node-a")
    assert key.key.hex() not in repr(key) and "***" in repr(key)
    assert FLEET.secret.hex() not in repr(FLEET) and "s" * 32 not in repr(FLEET)


def test_a_short_fleet_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes, got 8"):
        FleetSecret(b"12345678")


def test_the_fleet_signer_signs_as_the_enrolled_key_would() -> None:
    signer = FleetSigner(FLEET)
    assert signer.headers("node-a", TOPIC, b"k", VALUE) == sign(
        derive_node_key(FLEET, "node-a"), TOPIC, b"k", VALUE)


def test_header_map_takes_lists_and_dicts() -> None:
    pairs = [("other", b"x"), (HEADER_NODE, b"a"), (HEADER_NODE, b"b"), (HEADER_KID, None)]
    assert header_map(pairs) == {"other": b"x", HEADER_NODE: b"b", HEADER_KID: None}
    assert header_map({HEADER_MAC: b"m"}) == {HEADER_MAC: b"m"}
    assert header_map(None) == {} and header_map(()) == {}


def test_a_header_with_a_null_value_counts_as_missing() -> None:
    headers = sign(derive_node_key(FLEET, "node-a"), TOPIC, b"job-1", VALUE)
    assert _verify(Verifier([FLEET]), [*headers[:2], (HEADER_MAC, None)]).why == "no_mac"


@pytest.mark.parametrize("key_len", [0, 16, 32, 64, 65, 200])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 1000, 5000])
def test_the_precomputed_hmac_equals_the_standard_library(key_len: int, size: int) -> None:
    key, data = bytes(range(key_len % 256)) * (key_len // 256 + 1), b"\xa5" * size
    key = key[:key_len]
    assert Hmac(key).digest(data) == hmac.digest(key, data, "sha256")
