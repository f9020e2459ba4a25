"""fetch_codec: aiokafka's batch reader decodes zstd with a reused context and lz4 with
python-lz4, byte for byte, and leaves what it does not take to aiokafka's own decoders."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import aiokafka.codec
import kafka.codec
import lz4.frame
import pytest
import zstandard
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from trainguard.pipeline import fetch_codec
from trainguard.pipeline.fetch_codec import install, installed, lz4_decode, zstd_decode

_LZ4, _ZSTD = 3, 4  # Kafka's attribute bits for lz4 and zstd


@pytest.fixture
def patched() -> Iterator[None]:
    """aiokafka's readers pointed at fetch_codec for one test, then as they were."""
    modules = [importlib.import_module(name) for name in fetch_codec.READERS]
    before = [(m.zstd_decode, m.lz4_decode) for m in modules]
    assert install()
    yield
    for module, (zstd_was, lz4_was) in zip(modules, before, strict=True):
        module.zstd_decode, module.lz4_decode = zstd_was, lz4_was


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fast path's uses (each takes the thread's context once)."""
    used: list[int] = []
    real = fetch_codec._context

    def counted() -> zstandard.ZstdDecompressor:
        used.append(1)
        return real()

    monkeypatch.setattr(fetch_codec, "_context", counted)
    return used


def _batch(values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=_ZSTD, is_transactional=0, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
    for i, value in enumerate(values):
        assert builder.append(i, timestamp=None, key=b"job-1", value=value, headers=[])
    return bytes(builder.build())


def _telemetry(n: int) -> list[bytes]:
    return [b'{"kind":"gpu_sample_batch","node":"n%d","util":[%d,97,98]}' % (i, i)
            for i in range(n)]


def _outcome(decode: Any, payload: bytes) -> tuple[Any, ...]:
    """What ``decode`` makes of ``payload``: its bytes, or its error's type and message."""
    try:
        return ("decoded", decode(payload))
    except Exception as exc:  # noqa: BLE001 - whatever aiokafka raises is the reference
        return ("raised", type(exc), str(exc))


def test_aiokafka_reads_a_zstd_batch_through_the_reused_context(
        patched: None, contexts: list[int]) -> None:
    values = _telemetry(40)
    batch = MemoryRecords(_batch(values)).next_batch()
    assert [r.value for r in batch] == values
    assert installed()
    assert contexts == [1]  # the fast path decoded it, not aiokafka's own decoder


def test_install_is_idempotent_and_keeps_aiokafka_decoder_as_fallback(patched: None) -> None:
    assert install() and install()
    assert fetch_codec._fallbacks["zstd_decode"] is aiokafka.codec.zstd_decode
    assert fetch_codec._fallbacks["lz4_decode"] is aiokafka.codec.lz4_decode


@pytest.mark.parametrize("size", [0, 1, 100, 4_873, 70_000, 1 << 20])
def test_frames_of_the_producers_decode_as_aiokafka_decodes_them(
        size: int, contexts: list[int]) -> None:
    text = (b"util_gpu_pct 97.5 mem_used 12345 " * (size // 32 + 1))[:size]
    noise = os.urandom(size)
    for payload in (text, noise):
        for frame in (kafka.codec.zstd_encode(payload),  # the agents' kafka-python
                      aiokafka.codec.zstd_encode(payload)):  # aiokafka (the bench's producer)
            assert zstd_decode(frame) == aiokafka.codec.zstd_decode(frame) == payload
    assert len(contexts) == 4


def test_several_frames_go_to_aiokafka_decoder(contexts: list[int]) -> None:
    frames = kafka.codec.zstd_encode(b"first ") + kafka.codec.zstd_encode(b"second")
    assert zstd_decode(frames) == aiokafka.codec.zstd_decode(frames) == b"first second"


def test_a_frame_without_content_size_goes_to_aiokafka_decoder(contexts: list[int]) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 5000)
    assert zstandard.frame_content_size(frame) == -1
    assert zstd_decode(frame) == b"x" * 5000
    assert contexts == []


def test_a_frame_declaring_more_than_max_content_is_not_allocated_here(
        monkeypatch: pytest.MonkeyPatch, contexts: list[int]) -> None:
    monkeypatch.setattr(fetch_codec, "MAX_CONTENT", 1000)
    frame = kafka.codec.zstd_encode(b"y" * 1001)
    assert zstd_decode(frame) == b"y" * 1001
    assert contexts == []


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not_zstd", "empty"])
def test_damaged_input_meets_what_aiokafka_does(damage: str) -> None:
    frame = kafka.codec.zstd_encode(bytes(range(256)) * 8 + b"z" * 3000)
    cases = {"truncated": [frame[:-7]], "not_zstd": [b"definitely not a zstd frame"],
             "empty": [b""],
             "flipped": [frame[:i] + bytes([frame[i] ^ 0xFF]) + frame[i + 1:]
                         for i in range(len(frame))]}[damage]
    outcomes = [_outcome(zstd_decode, bad) for bad in cases]
    assert outcomes == [_outcome(aiokafka.codec.zstd_decode, bad) for bad in cases]
    assert any(o[0] == "raised" for o in outcomes)


def test_the_context_decodes_again_after_a_damaged_frame() -> None:
    good = kafka.codec.zstd_encode(b"after " * 500)
    with pytest.raises(Exception):  # noqa: B017, PT011 - aiokafka's own error type
        zstd_decode(good[:-5])
    assert zstd_decode(good) == b"after " * 500


def test_threads_decode_with_their_own_contexts() -> None:
    payloads = [os.urandom(64) * (i + 1) for i in range(32)]
    frames = [kafka.codec.zstd_encode(p) for p in payloads]
    wrong: list[Any] = []
    seen: list[zstandard.ZstdDecompressor] = []  # held: a finished thread's id may be reused

    def work() -> None:
        seen.append(fetch_codec._context())
        for _ in range(50):
            for frame, payload in zip(frames, payloads, strict=True):
                if zstd_decode(frame) != payload:
                    wrong.append(payload)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert len({id(dctx) for dctx in seen}) == 4


@pytest.fixture
def lz4_fast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the lz4 fast path's successful decodes."""
    used: list[int] = []
    real = lz4.frame.decompress

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        used.append(1)
        return out

    monkeypatch.setattr(fetch_codec.lz4.frame, "decompress", counted)
    return used


def test_aiokafka_reads_an_lz4_batch_through_python_lz4(patched: None,
                                                       lz4_fast: list[int]) -> None:
    from kafka.record.default_records import DefaultRecordBatchBuilder as AgentsBuilder

    values = _telemetry(40)
    builder = AgentsBuilder(magic=2, compression_type=_LZ4, is_transactional=0,
                            producer_id=-1, producer_epoch=-1, base_sequence=-1,
                            batch_size=1 << 22)
    for i, value in enumerate(values):
        assert builder.append(i, timestamp=None, key=b"job-1", value=value, headers=[])
    batch = MemoryRecords(bytes(builder.build())).next_batch()  # as the agents frame it
    assert [r.value for r in batch] == values
    assert lz4_fast == [1]


@pytest.mark.parametrize("size", [1, 100, 4_873, 70_000, 1 << 20])
def test_lz4_frames_of_the_producers_decode_as_aiokafka_decodes_them(
        size: int, lz4_fast: list[int]) -> None:
    text = (b"util_gpu_pct 97.5 mem_used 12345 " * (size // 32 + 1))[:size]
    for payload in (text, os.urandom(size)):
        agents = kafka.codec.lz4_encode(payload)  # declares its size: the fast path
        bench = aiokafka.codec.lz4_encode(payload)  # cramjam's frame declares none
        assert lz4_decode(agents) == aiokafka.codec.lz4_decode(agents) == payload
        assert lz4_decode(bench) == aiokafka.codec.lz4_decode(bench) == payload
    assert len(lz4_fast) == 2  # the agents' frames only


def test_several_lz4_frames_or_too_large_a_one_go_to_aiokafka_decoder(
        monkeypatch: pytest.MonkeyPatch, lz4_fast: list[int]) -> None:
    frames = kafka.codec.lz4_encode(b"first ") + kafka.codec.lz4_encode(b"second")
    assert lz4_decode(frames) == aiokafka.codec.lz4_decode(frames)
    monkeypatch.setattr(fetch_codec, "MAX_CONTENT", 1000)
    big = kafka.codec.lz4_encode(b"y" * 1001)
    assert lz4_decode(big) == b"y" * 1001
    assert len(lz4_fast) <= 1  # the pair's first frame may decode before its tail is seen


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not_lz4", "empty", "size_lies"])
def test_damaged_lz4_input_meets_what_aiokafka_does(damage: str) -> None:
    payload = bytes(range(256)) * 8 + b"z" * 3000
    frame = kafka.codec.lz4_encode(payload)
    # Headers (15 bytes: magic, flags, size, checksum) that declare another size than
    # their blocks hold: the header of a longer and of a shorter payload's frame.
    liars = [kafka.codec.lz4_encode(other)[:15] + frame[15:]
             for other in (payload + b"more" * 100, payload[:1000])]
    cases = {"truncated": [frame[:-7], frame[:9], frame[:5], frame[:4]],
             "not_lz4": [b"definitely not lz4"],
             "empty": [b""], "size_lies": liars,
             "flipped": [frame[:i] + bytes([frame[i] ^ 0xFF]) + frame[i + 1:]
                         for i in range(0, len(frame), 7)]}[damage]
    outcomes = [_outcome(lz4_decode, bad) for bad in cases]
    assert outcomes == [_outcome(aiokafka.codec.lz4_decode, bad) for bad in cases]
    assert any(o[0] == "raised" for o in outcomes)
