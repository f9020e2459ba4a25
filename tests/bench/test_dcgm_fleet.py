"""The fleet exporter answers in dcgm-exporter's exposition format, with moving values."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from bench.dcgm_fleet import COUNTERS, GPUS, FleetBody, _Http

DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname",
               "DCGM_FI_DRIVER_VERSION"}


def _parse(body: bytes) -> dict[str, dict[tuple[str, str], float]]:
    """Family name -> (Hostname, gpu) -> value, checking labels and types on the way."""
    out: dict[str, dict[tuple[str, str], float]] = {}
    types = {c.name: c.kind for c in COUNTERS}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.type == types[fam.name], fam.name
        series = out.setdefault(fam.name, {})
        for s in fam.samples:
            assert s.name in (fam.name, fam.name + "_total")  # the parser adds _total
            assert set(s.labels) == DCGM_LABELS
            series[(s.labels["Hostname"], s.labels["gpu"])] = s.value
    return out


def test_a_node_body_parses_as_the_default_counter_set_for_eight_gpus() -> None:
    parsed = _parse(FleetBody().render(7, tick=1_000))
    assert list(parsed) == [c.name for c in COUNTERS]
    assert len(COUNTERS) == 26
    for series in parsed.values():
        assert set(series) == {("node-00007", str(g)) for g in range(GPUS)}


def test_gpu_uuids_are_distinct_across_gpus_and_nodes() -> None:
    body = FleetBody()
    uuids = [u for n in range(50) for k, u in body.node_labels(n).items() if k != b"h"]
    assert len(uuids) == 50 * GPUS == len(set(uuids))


def test_gauges_move_every_second_counters_grow_and_health_fields_stay_zero() -> None:
    body = FleetBody()
    a, b = _parse(body.render(3, tick=5_000)), _parse(body.render(3, tick=5_001))
    key = ("node-00003", "0")
    assert a["DCGM_FI_DEV_POWER_USAGE"][key] != b["DCGM_FI_DEV_POWER_USAGE"][key]
    assert a["DCGM_FI_DEV_SM_CLOCK"] != b["DCGM_FI_DEV_SM_CLOCK"]
    energy = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    assert all(b[energy][k] > a[energy][k] for k in a[energy])
    assert set(a["DCGM_FI_DEV_XID_ERRORS"].values()) == {0.0}
    assert set(b["DCGM_FI_DEV_ROW_REMAP_FAILURE"].values()) == {0.0}


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += bytes(data)

    def writelines(self, list_of_data: object) -> None:
        for d in list_of_data:  # type: ignore[attr-defined]
            self.write(d)


def _responses(raw: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while raw:
        head, raw = raw.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append((head.split(b"\r\n")[0], raw[:length]))
        raw = raw[length:]
    return out


def test_http_answers_pipelined_requests_split_across_reads_and_404s_foreign_nodes() -> None:
    proto, transport = _Http(FleetBody(), first=10, count=5), _Transport()
    proto.connection_made(transport)
    requests = (b"GET /node/12/metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
                b"GET /node/9/metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /node/14/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    for i in range(0, len(requests), 7):  # the stream arrives in arbitrary pieces
        proto.data_received(requests[i:i + 7])
    answers = _responses(transport.out)
    assert [status for status, _ in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 200 OK"]
    assert set(_parse(answers[0][1])["DCGM_FI_DEV_GPU_TEMP"]) == {
        ("node-00012", str(g)) for g in range(GPUS)}
    assert ("node-00014", "7") in _parse(answers[3][1])["DCGM_FI_DEV_FB_USED"]
