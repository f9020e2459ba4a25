"""Where one worker's time goes: its stages in-process, and a bare Faust agent's ceiling.

The stages are the worker's own code on 2,000-message batches of
:class:`bench.loadgen.FleetLoad` messages (half sample batches, half step batches), timed
with the worker's GC settings: decode + validate + intake lines (``Ingestor``), the
baseline detectors (``BaselineStage.observe``) and the store insert (``StoreSink.write``
into chdb). The ceiling is a Faust agent that does nothing but ``take_events(2000,
within=0.2)`` over the same messages from the real broker: the per-message price of
Faust's consumer, conductor and stream machinery, which no work inside the agent avoids.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import FleetLoad
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.pipeline.kafka_admin import ensure_topics
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import StoreUrl, migrate, open_store
from trainguard.schemas.topics import Topics

__all__ = ["run_stages"]

_BATCH = 2000
_CEILING_APP = '''
import os, time, faust
n = int(os.environ["TG_N"])
app = faust.App("ceiling-" + os.environ["TG_TOPIC"], broker="kafka://" + os.environ["TG_BS"],
                store="memory://", web_enabled=False, autodiscover=False,
                consumer_auto_offset_reset="earliest")
topic = app.topic(os.environ["TG_TOPIC"], key_type=bytes, value_type=bytes,
                  key_serializer="raw", value_serializer="raw")
seen, t0 = [0], [0.0]
@app.agent(topic)
async def drain(stream):
    async for events in stream.take_events(2000, within=0.2):
        if not seen[0]:
            t0[0] = time.perf_counter()
        seen[0] += len(events)
        if seen[0] >= n:
            print(f"RATE {seen[0] / (time.perf_counter() - t0[0]):.0f}", flush=True)
            os._exit(0)
app.main()
'''


def _median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def _stage_times(work: Path, nodes: int, ticks: int = 6) -> dict[str, float]:
    topics = Topics("stages")
    load = FleetLoad(topics, nodes)
    t0 = time.time() - ticks
    batches: list[list[RawMessage]] = []
    for k in range(ticks):
        msgs = [RawMessage(t, i % 3, k * 2 * nodes + i, key, value)
                for i, (t, key, value) in enumerate(load.tick(k, t0 + k))]
        batches += [msgs[j:j + _BATCH] for j in range(0, len(msgs), _BATCH)]
    ingestor, stage = Ingestor(topics), BaselineStage()
    store = open_store(StoreUrl.parse(f"chdb://{work / 'stages-store'}"))
    migrate(store)
    sink = StoreSink(store)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as trainguard.pipeline.worker does
    decode, observe, write = [], [], []
    for msgs in batches:
        a = time.perf_counter()
        result = ingestor.ingest(msgs)
        b = time.perf_counter()
        stage.observe(result.decoded, result.sources)
        c = time.perf_counter()
        sink.write(result.rows, result.lines)
        d = time.perf_counter()
        decode.append(b - a)
        observe.append(c - b)
        write.append(d - c)
    store.close()
    skip = len(batches) // ticks  # the first tick pays one-off costs (entity registration)
    return {"decode": _median_ms(decode[skip:]), "observe": _median_ms(observe[skip:]),
            "write": _median_ms(write[skip:])}


def _faust_ceiling(bootstrap: str, nodes: int, ticks: int = 10) -> float:
    from bench.pipeline import _Producer

    topic = f"ceiling-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(bootstrap, [topic], partitions=3)
    load = FleetLoad(Topics("ceiling"), nodes)
    producer = _Producer(bootstrap)
    t0 = time.time() - ticks
    n = sum(producer.send_all((topic, k, v) for _, k, v in load.tick(i, t0 + i))
            for i in range(ticks))
    producer.close()
    env = {**os.environ, "TG_N": str(n), "TG_TOPIC": topic, "TG_BS": bootstrap}
    # Faust keeps a data directory in the working directory: give it a scratch one.
    with tempfile.TemporaryDirectory(prefix="tg-ceiling-") as scratch:
        out = subprocess.run([sys.executable, "-c", _CEILING_APP, "worker", "-l", "warn"],
                             env=env, capture_output=True, text=True, timeout=600, cwd=scratch)
    for line in (out.stdout + out.stderr).splitlines():
        if "RATE " in line:
            return float(line.rsplit("RATE ", 1)[1].split()[0])
    raise RuntimeError(f"faust ceiling app gave no rate:\n{out.stderr[-2000:]}")


def run_stages(bootstrap: str, work: Path, nodes: int) -> None:
    """Print per-stage costs per 2,000-message batch and the bare Faust ceiling."""
    t = _stage_times(work, nodes)
    per_msg = {k: v * 1000 / _BATCH for k, v in t.items()}  # µs per message
    total = sum(per_msg.values())
    ceiling = _faust_ceiling(bootstrap, nodes)
    faust_us = 1e6 / ceiling
    print(f"stages per {_BATCH}-message batch (half sample batches of 8 GPUs, half step "
          f"batches of 8 ranks; medians): decode+validate+intake lines {t['decode']:.1f} ms, "
          f"baseline detectors {t['observe']:.1f} ms, store insert {t['write']:.1f} ms", flush=True)
    print(f"per message: decode {per_msg['decode']:.1f} us, detectors {per_msg['observe']:.1f} "
          f"us, store {per_msg['write']:.1f} us (sum {total:.1f} us); bare Faust take_events "
          f"ceiling {ceiling:,.0f} messages/s = {faust_us:.1f} us per message", flush=True)
