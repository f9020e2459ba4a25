"""The intake's columns, read through msgpack by the compiled kernel and (without numba)
through JSON by Arrow's C++ reader, are value for value the tables the Python-object
builder made (``reference_columns``, main at 23304dc): every test runs on both paths."""

from __future__ import annotations

import random
import time

import msgspec
import pyarrow as pa
import pytest

from tests.pipeline.sinks import reference_columns as reference
from trainguard.pipeline.sinks import columns
from trainguard.pipeline.sinks.columns import sample_tables, step_tables
from trainguard.pipeline.store.errors import StoreDataError
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.ranks import EnvManifest, RankEvent
from trainguard.schemas.records import (
    GpuProcess,
    GpuSample,
    GpuSampleBatch,
    RankClaim,
    StepBatch,
    StepRecord,
    XidEvent,
)

NOW = time.time()
_DECODER = RecordDecoder(GpuSampleBatch | StepBatch)


@pytest.fixture(autouse=True, params=["msgpack", "json"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on the compiled msgpack path and on the JSON path numba-less hosts take."""
    monkeypatch.setattr(columns, "PACKED", request.param == "msgpack")
    return str(request.param)


def _same(got: dict[str, pa.Table], want: dict[str, pa.Table]) -> None:
    assert list(got) == list(want)
    for name, table in want.items():
        assert got[name].schema == table.schema, name
        for column in table.column_names:
            assert got[name].column(column).equals(table.column(column)), (name, column)


def _wire(records: list) -> list[tuple]:
    """Intake items as the worker has them: decoded off the wire."""
    return [(_DECODER.decode(encode(r)), 3, 100 + i) for i, r in enumerate(records)]


def _float(rng: random.Random) -> float:
    """Any finite double: random bits, so every digit of the shortest repr counts."""
    while True:
        value = msgspec.msgpack.decode(b"\xcb" + rng.randbytes(8))
        if value == value and abs(value) != float("inf"):
            return abs(value)


def _gpu(rng: random.Random, index: int) -> GpuSample:
    def maybe(value):  # noqa: ANN001, ANN202
        return value if rng.random() < 0.6 else None

    return GpuSample(
        index=index, uuid=maybe(f"GPU-{rng.random()}"), model=maybe("H100 \"sxm\" é\n"),
        lost=rng.random() < 0.2, util_gpu_pct=maybe(rng.random() * 100),
        mem_used_bytes=maybe(rng.randrange(2**63)), power_w=maybe(_float(rng)),
        temp_c=maybe(rng.uniform(-50, 200)), sm_clock_mhz=maybe(rng.randrange(2**32)),
        clock_event_reasons=maybe(rng.randrange(2**63)), pcie_rx_bytes_s=maybe(_float(rng)),
        remapped_rows_uncorrectable=maybe(rng.randrange(2**32)),
        remap_pending=maybe(rng.random() < 0.5), compute_procs=maybe(rng.randrange(2**16)),
        xid_events=[XidEvent(xid=rng.randrange(2**16), ts=NOW, detail="d")
                    for _ in range(rng.randrange(3))],
        processes=[GpuProcess(pid=rng.randrange(2**32),
                              used_mem_bytes=maybe(rng.randrange(2**63)))
                   for _ in range(rng.randrange(3))],
        errors=({"power_w": "NVML_ERROR_UNKNOWN", "temp_c": "x"} if rng.random() < 0.1
                else {}),
    )


def _samples(rng: random.Random, n: int) -> list[GpuSampleBatch]:
    return [GpuSampleBatch(cluster="c", node=f"n{i}", ts=NOW - _float(rng) % 1e8, seq=i,
                           agent_id="a", driver_version=rng.choice([None, "550.1"]),
                           job_id=rng.choice([None, "j"]),
                           gpus=[_gpu(rng, g) for g in range(rng.randrange(9))])
            for i in range(n)]


def _steps(rng: random.Random, n: int) -> list[StepBatch]:
    out = []
    for i in range(n):
        ranks = [StepRecord(job_id="j", rank=r, world_size=64, node=f"n{i}", step=i,
                            ts=NOW + rng.random(), loss=rng.choice([None, _float(rng)]),
                            step_time_s=rng.choice([None, _float(rng)]),
                            param_checksum=rng.choice([None, "p"]),
                            nonfinite=rng.choice([[], ["loss", "lr"]]),
                            shard=rng.choice([None, 3]), data_epoch=rng.choice([None, 2**63 - 1]))
                 for r in range(rng.randrange(9))]
        events = [RankEvent(rank=1, ts=NOW, event="exited", pid=7, signal=9),
                  RankEvent(rank=0, ts=NOW, event="waiting", since=NOW - 3, collective=5,
                            step=4),
                  RankEvent(rank=2, ts=NOW, event="bye", reason="finished")][:rng.randrange(4)]
        out.append(StepBatch(
            cluster="c", node=f"n{i}", job_id="j", ts=NOW, seq=i, agent_id="a", steps=ranks,
            events=events,
            claims=[RankClaim(rank=0, ts=NOW, pid=1, uid=2, holder_pid=3, holder_uid=4)],
            manifests=[EnvManifest(rank=0, ts=NOW, fingerprint="ab" * 32,
                                   entries={"torch": "cd" * 32})]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_sample_batches_equal_the_python_built_columns(seed: int) -> None:
    items = _wire(_samples(random.Random(seed), 80))
    _same(sample_tables(items), reference.sample_tables(items))


@pytest.mark.parametrize("seed", range(4))
def test_step_batches_and_rank_events_equal_the_python_built_columns(seed: int) -> None:
    items = _wire(_steps(random.Random(seed), 80))
    _same(step_tables(items), reference.step_tables(items))


def test_sparse_and_lost_gpus_store_empty_texts_zero_memory_and_empty_lists() -> None:
    sparse = GpuSample(index=4)  # nothing but the index: every optional field missing
    lost = GpuSample(index=5, lost=True)
    procs = GpuSample(index=6, processes=[GpuProcess(pid=9)])
    batch = GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1, agent_id="a",
                           gpus=[sparse, lost, procs])
    items = _wire([batch])
    got = sample_tables(items)
    _same(got, reference.sample_tables(items))
    gpus = got["gpu_samples"].to_pydict()
    assert gpus["uuid"] == ["", "", ""] and gpus["job_id"] == ["", "", ""]
    assert gpus["lost"] == [False, True, False] and gpus["power_w"] == [None, None, None]
    assert gpus["xids"] == [[], [], []] and gpus["proc_mem_bytes"] == [[], [], [0]]
    assert gpus["read_errors"] == [[], [], []]
    ledger = got["sample_batches"].to_pydict()
    assert ledger["gpu_count"] == [3] and ledger["lost_gpus"] == [1]
    assert ledger["driver_version"] == [""] and ledger["kafka_offset"] == [100]


def test_read_errors_are_read_only_from_gpus_that_have_them() -> None:
    gpus = [GpuSample(index=0), GpuSample(index=1, errors={"power_w": "NVML_ERROR_UNKNOWN"})]
    items = _wire([GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1, agent_id="a",
                                  gpus=gpus)])
    got = sample_tables(items)
    _same(got, reference.sample_tables(items))
    assert got["gpu_samples"].column("read_errors").to_pylist() == [
        [], [("power_w", "NVML_ERROR_UNKNOWN")]]


def test_texts_with_quotes_and_keys_in_them_are_stored_as_they_are() -> None:
    gpu = GpuSample(index=0, uuid='"errors":{"a":"b"}', model="errors")
    items = _wire([GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1, agent_id="a",
                                  gpus=[gpu])])
    got = sample_tables(items)
    _same(got, reference.sample_tables(items))
    assert got["gpu_samples"].column("uuid").to_pylist() == ['"errors":{"a":"b"}']


def test_a_step_batch_without_ranks_or_events_makes_no_table() -> None:
    empty = StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1, agent_id="a", steps=[])
    assert step_tables(_wire([empty])) == {}


@pytest.mark.parametrize("change", [
    {"index": 256},                       # gpu: UInt8
    {"compute_procs": 70_000},            # UInt16
    {"sm_clock_mhz": -1},                 # UInt32
    {"mem_used_bytes": 2**64},            # UInt64
    {"processes": [GpuProcess(pid=2**32)]},
    {"xid_events": [XidEvent(xid=2**16, ts=NOW)]},
    {"util_gpu_pct": "high"},             # not a number at all
])
def test_a_gpu_value_its_column_cannot_hold_is_a_store_data_error(change: dict) -> None:
    gpu = msgspec.structs.replace(GpuSample(index=0), **change)  # in-process: unchecked
    batch = GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1, agent_id="a", gpus=[gpu])
    with pytest.raises(StoreDataError, match="sample batch does not fit its columns"):
        sample_tables([(batch, 0, 0)])


def test_a_batch_written_while_the_last_ones_error_is_alive_reads_right() -> None:
    # The sink bisects a refused batch inside its except block: the error's traceback
    # still views the bytes the last batch was encoded into, so they cannot be reused.
    bad = GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1, agent_id="a",
                         gpus=[msgspec.structs.replace(GpuSample(index=0), index=256)])
    good = _wire(_samples(random.Random(7), 40))
    for _ in range(2):
        try:
            sample_tables([(bad, 0, 0)])
        except StoreDataError:  # what follows takes more bytes than the bad batch did
            _same(sample_tables(good), reference.sample_tables(good))
            _same(sample_tables(good[:3]), reference.sample_tables(good[:3]))
        else:
            raise AssertionError("the bad batch was read")


@pytest.mark.parametrize("change", [{"step": -3}, {"rank": 2**32}, {"gpu_index": 300}])
def test_a_step_value_its_column_cannot_hold_is_a_store_data_error(change: dict) -> None:
    step = msgspec.structs.replace(
        StepRecord(job_id="j", rank=0, world_size=1, node="n", step=1, ts=NOW), **change)
    batch = StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1, agent_id="a",
                      steps=[step])
    with pytest.raises(StoreDataError, match="step batch does not fit its columns"):
        step_tables([(batch, 0, 0)])


def test_a_rank_event_value_out_of_range_is_a_store_data_error() -> None:
    event = RankEvent(rank=0, ts=NOW, event="exited", exit_code=300)
    batch = StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1, agent_id="a",
                      steps=[], events=[event])
    with pytest.raises(StoreDataError, match="step batch"):
        step_tables([(batch, 0, 0)])


def test_a_nan_built_in_process_is_stored_as_null_as_json_would_carry_it() -> None:
    gpu = GpuSample(index=0, power_w=float("nan"), pcie_rx_bytes_s=float("nan"), temp_c=40.0)
    step = StepRecord(job_id="j", rank=0, world_size=1, node="n", step=1, ts=NOW,
                      loss=float("nan"), step_time_s=float("nan"))
    samples = sample_tables([(GpuSampleBatch(cluster="c", node="n", ts=NOW, seq=1,
                                             agent_id="a", gpus=[gpu]), 0, 0)])
    steps = step_tables([(StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1,
                                    agent_id="a", steps=[step]), 0, 0)])
    gpus = samples["gpu_samples"].to_pydict()
    assert gpus["power_w"] == [None] and gpus["pcie_rx_bytes_s"] == [None]
    assert gpus["temp_c"] == [40.0]
    assert steps["steps"].to_pydict()["loss"] == [None]
    assert steps["steps"].to_pydict()["step_time_s"] == [None]


def test_an_empty_batch_list_makes_no_table() -> None:
    assert sample_tables([]) == {} and step_tables([]) == {}


def test_warm_up_compiles_the_kernel_before_any_write(path: str) -> None:
    from trainguard.pipeline.sinks import msgpack_notes, record_pack

    columns.warm_up()  # raises if either builder fails on its small records
    if path == "msgpack" and record_pack.AVAILABLE:
        assert msgpack_notes.unpack.signatures and msgpack_notes.gather.signatures
