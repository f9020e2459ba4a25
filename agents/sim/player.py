"""Play simulated jobs into Kafka on the wall clock, as their node agents would.

Tick ``t`` of every job (``t`` from 0, as the simulator counts) is sent at wall time
``start + t / speed``; at ``speed=1`` with
the jobs' ``start_ts`` set to the wall clock, a record's event time is the moment it is
sent, which is what a latency measurement from a fault to a page needs. Used by the
alert end-to-end tests and the fault-to-page benchmark. With a ``signer`` each message is
signed as the node its record names, as that node's agent would sign it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from trainguard.agents.sim.job import JobSimulator
from trainguard.schemas.auth import FleetSigner
from trainguard.schemas.codec import encode
from trainguard.schemas.topics import Topics

__all__ = ["play"]

#: ``send(topic, key, value)``; with a signer also the headers: ``send(..., headers)``.
Send = Callable[..., object]


def play(
    sims: Sequence[JobSimulator],
    send: Send,
    topics: Topics,
    ticks: int,
    *,
    speed: float = 1.0,
    start: float | None = None,
    on_tick: Callable[[int], bool | None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    signer: FleetSigner | None = None,
) -> int:
    """Tick every job ``ticks`` times and send its records; return the messages sent.

    ``start`` is the wall time of tick 0 (default: now). ``on_tick(t)`` runs after tick
    ``t`` was sent; returning True stops early (a test that saw what it waited for).
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    names = {"samples": topics.samples, "steps": topics.steps,
             "heartbeats": topics.heartbeats}
    t0 = clock() if start is None else start
    sent = 0
    for t in range(ticks):
        # A simulator's tick t carries event time start_ts + t: send it at t0 + t.
        delay = t0 + t / speed - clock()
        if delay > 0:
            sleep(delay)
        for sim in sims:
            for emit in sim.tick():
                topic, value = names[emit.topic], encode(emit.record)
                if signer is None:
                    send(topic, emit.key, value)
                else:
                    send(topic, emit.key, value,
                         signer.headers(emit.record.node, topic, emit.key, value))
                sent += 1
        if on_tick is not None and on_tick(t):
            break
    return sent
