"""A dcgm-exporter-shaped fleet endpoint: N nodes × 8 GPUs served from a few local processes.

Each node is one scrape target, ``GET /node/<i>/metrics``, answering what dcgm-exporter 4.x
answers with its default counter set (``etc/default-counters.csv`` as shipped in
``dcgm-exporter:4.4.2-4.7.1``: 26 fields, listed in :data:`COUNTERS`), one series per field and
GPU, labelled as dcgm-exporter labels them (``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
``modelName``, ``Hostname``, ``DCGM_FI_DRIVER_VERSION``). Clocks, temperatures, power,
utilisations, memory and profiling ratios change on every scrape, the energy and NVLink
counters grow on every scrape, and the error and status fields stay at a healthy node's
constant (0), as on a real fleet.

The exporter is made cheap because its CPU is not what is measured: one body template per
shard (``%(name)s`` slots for the node's hostname, GPU UUIDs and the values), 16 value sets
drawn once per second and shared round-robin by the nodes, and a minimal HTTP/1.1 keep-alive
server on asyncio. One shard process serves a contiguous range of nodes on its own port:

    python -m bench.dcgm_fleet --port 9400 --first 0 --count 2500
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import zlib
from dataclasses import dataclass

__all__ = ["COUNTERS", "GPUS", "Counter", "FleetBody", "serve"]

GPUS = 8
MODEL = "NVIDIA H100 80GB HBM3"
DRIVER = "550.90.07"
_VARIANTS = 16  # value sets per second; node i uses set (i + tick) % 16


@dataclass(frozen=True)
class Counter:
    """One DCGM field: its metric name, Prometheus type, help text and how its value moves.

    ``lo``/``hi`` bound a gauge drawn afresh every second; a counter grows by ``rate`` per
    second (``rate`` 0: a counter that a healthy GPU keeps at 0); ``lo == hi`` is a constant.
    """

    name: str
    kind: str
    help: str
    lo: float = 0.0
    hi: float = 0.0
    rate: float = 0.0
    decimals: int = 0


COUNTERS: tuple[Counter, ...] = (
    Counter("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", 1410, 1980),
    Counter("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", 2600, 2619),
    Counter("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", 38, 62),
    Counter("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", 35, 71),
    Counter("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", 90, 700, decimals=3),
    Counter("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
            "Total energy consumption since boot (in mJ).", rate=650_000),
    Counter("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    Counter("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", 0, 100),
    Counter("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", 0, 60),
    Counter("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    Counter("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    Counter("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    Counter("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", 1000, 40000),
    Counter("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", 40000, 80000),
    Counter("DCGM_FI_DEV_FB_TOTAL", "gauge", "Framebuffer memory total (in MiB).", 81559, 81559),
    Counter("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).",
            522, 522),
    Counter("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter",
            "Total number of NVLink bandwidth counters for all lanes.", rate=45_000_000),
    Counter("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status"),
    Counter("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter",
            "Number of remapped rows for uncorrectable errors"),
    Counter("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter",
            "Number of remapped rows for correctable errors"),
    Counter("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    Counter("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge",
            "Ratio of time the graphics engine is active (in %).", 0, 1, decimals=6),
    Counter("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge",
            "Ratio of cycles the tensor (HMMA) pipe is active (in %).", 0, 1, decimals=6),
    Counter("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface "
            "is active sending or receiving data (in %).", 0, 1, decimals=6),
    Counter("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "The rate of data transmitted over the PCIe "
            "bus - including both protocol headers and data payloads - in bytes per second.",
            1e6, 9e8),
    Counter("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "The rate of data received over the PCIe "
            "bus - including both protocol headers and data payloads - in bytes per second.",
            1e6, 9e8),
)


def _template(gpus: int) -> bytes:
    """The body of one node with ``%(h)s`` (hostname), ``%(uK)s`` (GPU UUID) and value slots."""
    lines: list[str] = []
    for f, c in enumerate(COUNTERS):
        lines.append(f"# HELP {c.name} {c.help.replace('%', '%%')}")
        lines.append(f"# TYPE {c.name} {c.kind}")
        for g in range(gpus):
            lines.append(
                f'{c.name}{{gpu="{g}",UUID="%(u{g})s",pci_bus_id="00000000:{0x18 + 0x10 * g:02X}'
                f':00.0",device="nvidia{g}",modelName="{MODEL}",Hostname="%(h)s",'
                f'DCGM_FI_DRIVER_VERSION="{DRIVER}"}} %(v{f}_{g})s')
    return ("\n".join(lines) + "\n").encode()


class FleetBody:
    """Renders node bodies: one shared template, per-node labels, per-second value sets."""

    def __init__(self, gpus: int = GPUS, seed: int = 17) -> None:
        self.gpus = gpus
        self._template = _template(gpus)
        self._rng = random.Random(seed)
        self._tick = -1
        self._sets: list[dict[bytes, bytes]] = []
        self._labels: dict[int, dict[bytes, bytes]] = {}

    def node_labels(self, node: int) -> dict[bytes, bytes]:
        """The node's hostname and its GPUs' UUIDs, as template slots (cached per node)."""
        labels = self._labels.get(node)
        if labels is None:
            labels = {b"h": b"node-%05d" % node}
            for g in range(self.gpus):
                h = zlib.crc32(b"%d/%d" % (node, g))
                labels[b"u%d" % g] = b"GPU-%08x-%04x-4%03x-a%03x-%012x" % (
                    h, node & 0xFFFF, g, node % 4096, h * 2654435761 % (1 << 48))
            self._labels[node] = labels
        return labels

    def _values(self, tick: int) -> list[dict[bytes, bytes]]:
        if tick != self._tick:  # draw this second's value sets once, for every node
            self._tick = tick
            self._sets = [self._draw(tick, k) for k in range(_VARIANTS)]
        return self._sets

    def _draw(self, tick: int, variant: int) -> dict[bytes, bytes]:
        rnd = self._rng.random
        out: dict[bytes, bytes] = {}
        for f, c in enumerate(COUNTERS):
            for g in range(self.gpus):
                if c.rate:
                    v = c.rate * tick + (variant * self.gpus + g) * 1e9
                else:
                    v = c.lo + (c.hi - c.lo) * rnd() if c.hi > c.lo else c.lo
                text = f"{v:.{c.decimals}f}" if c.decimals else str(int(v))
                out[b"v%d_%d" % (f, g)] = text.encode()
        return out

    def render(self, node: int, tick: int | None = None) -> bytes:
        """One scrape of node ``node`` at second ``tick`` (now by default)."""
        t = int(time.time()) if tick is None else tick
        slots = self._values(t)[(node + t) % _VARIANTS].copy()
        slots.update(self.node_labels(node))
        return self._template % slots


_HEADERS = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n")
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _Http(asyncio.Protocol):
    """HTTP/1.1 keep-alive, GET only: ``/node/<i>/metrics`` for the nodes of this shard."""

    def __init__(self, body: FleetBody, first: int, count: int) -> None:
        self._body, self._first, self._end = body, first, first + count
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while (end := self._buf.find(b"\r\n\r\n")) >= 0:
            head, self._buf = self._buf[:end], self._buf[end + 4:]
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            self._answer(parts[1] if len(parts) == 3 else b"")

    def _answer(self, path: bytes) -> None:
        assert self._transport is not None
        bits = path.split(b"/")
        node = int(bits[2]) if len(bits) == 4 and bits[2].isdigit() else -1
        if bits[1:2] != [b"node"] or bits[3:] != [b"metrics"] or not (
                self._first <= node < self._end):
            self._transport.write(_NOT_FOUND)
            return
        body = self._body.render(node)
        self._transport.writelines((_HEADERS % len(body), body))


async def serve(port: int, first: int, count: int, gpus: int = GPUS) -> None:
    """Serve nodes ``first`` .. ``first + count - 1`` on 127.0.0.1:``port`` until cancelled."""
    body = FleetBody(gpus)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(body, first, count), "127.0.0.1", port,
                                      backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--gpus", type=int, default=GPUS)
    args = p.parse_args()
    try:
        asyncio.run(serve(args.port, args.first, args.count, args.gpus))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
