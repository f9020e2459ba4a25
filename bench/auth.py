"""Per-message cost of message authentication: signing (agent) and verifying (worker).

Messages are the load generator's (:class:`bench.loadgen.FleetLoad`): a GPU sample batch
of 8 GPUs and a step batch of 8 ranks per node, plus step batches of 2 and 32 ranks for
the range of sizes. Each figure is the time per message over ``--messages`` messages, in
``--rounds`` rounds:

- ``sign``: the agent's side, :func:`trainguard.schemas.auth.sign` (the three headers);
- ``verify``: the worker's side as ingest runs it, :meth:`MessageAuth.verify` on a
  :class:`RawMessage` (header lookup, cached node key, HMAC, constant-time compare);
- ``hmac only``: the bare ``hmac.digest`` over the same bytes (one-shot, key set up per
  call), for comparison.

Each figure is printed as the median of the rounds and the best round (the machine's
floor when other processes share it).

Then the worker's ingest stage (decode, validate, intake lines: ``Ingestor.ingest``) on
2,000-message batches of the same load, with and without verification, in alternating
rounds: what turning authentication on costs the stage, in µs per message and percent.

    python -m bench.auth [--messages 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hmac
import statistics
import time
from collections.abc import Callable

from bench.loadgen import FleetLoad
from trainguard.pipeline.auth import MessageAuth
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.ingest import Ingestor
from trainguard.schemas.auth import FleetSecret, FleetSigner, sign
from trainguard.schemas.topics import Topics

#: 5 µs per message: 20,000 messages/s cost a tenth of a core.
TARGET_VERIFY_US = 5.0


def _messages(gpus: int, nodes: int) -> dict[str, list[tuple[str, bytes, bytes, str]]]:
    """(topic, key, value, node) of one tick: sample batches and step batches."""
    topics = Topics("bench")
    load = FleetLoad(topics, nodes, gpus=gpus)
    out: dict[str, list[tuple[str, bytes, bytes, str]]] = {"samples": [], "steps": []}
    names = iter(n for n in load.names for _ in range(2))
    for topic, key, value in load.tick(1, time.time()):
        out["samples" if topic == topics.samples else "steps"].append(
            (topic, key, value, next(names)))
    return out


def _per_message_us(run: Callable[[], None], count: int, rounds: int) -> tuple[float, float]:
    """Median and best of ``rounds`` timings of ``run``, in µs per message."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(times), min(times)


def bench_kind(name: str, msgs: list[tuple[str, bytes, bytes, str]], rounds: int) -> float:
    """Print sign, verify and bare HMAC µs per message for ``msgs``; return verify's."""
    fleet = FleetSecret(b"b" * 32)
    signer = FleetSigner(fleet)
    keys = [signer.key_for(node) for *_, node in msgs]
    raw = [RawMessage(topic, 0, i, key, value, None,
                      tuple(sign(k, topic, key, value)))
           for i, ((topic, key, value, _), k) in enumerate(zip(msgs, keys, strict=True))]
    auth = MessageAuth([fleet])
    for m in raw:  # warm the node-key cache, as a running worker has it
        auth.verify(m)
    assert auth.verified == len(raw) and not auth.failed

    def signing() -> None:
        for (topic, key, value, _), k in zip(msgs, keys, strict=True):
            sign(k, topic, key, value)

    def verifying() -> None:
        for m in raw:
            auth.verify(m)

    def bare() -> None:
        for (_, _, value, _), k in zip(msgs, keys, strict=True):
            hmac.digest(k.key, value, "sha256")

    size = statistics.median(len(v) for _, _, v, _ in msgs)
    (s_us, s_min), (v_us, v_min), (h_us, h_min) = (
        _per_message_us(fn, len(msgs), rounds) for fn in (signing, verifying, bare))
    print(f"auth {name:<22} {size:>6.0f} B: sign {s_us:5.2f} µs (best {s_min:5.2f}), verify "
          f"{v_us:5.2f} µs (best {v_min:5.2f}), hmac only {h_us:5.2f} µs (best {h_min:5.2f}) "
          "per message, median of rounds", flush=True)
    return v_us


def bench_ingest(nodes: int, rounds: int) -> None:
    """Print the ingest stage's µs per message with and without MAC verification."""
    topics, fleet = Topics("bench"), FleetSecret(b"i" * 32)
    signer = FleetSigner(fleet)
    load = FleetLoad(topics, nodes)
    names = [n for n in load.names for _ in range(2)]
    now = time.time()
    msgs = [RawMessage(t, i % 3, i, k, v, now, tuple(signer.headers(node, t, k, v)))
            for i, ((t, k, v), node) in enumerate(zip(load.tick(1, now), names, strict=True))]
    batches = [msgs[j:j + 2000] for j in range(0, len(msgs), 2000)]
    plain, signed = Ingestor(topics), Ingestor(topics, auth=MessageAuth([fleet]))
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for name, ingestor in (("off", plain), ("on", signed)):
            start = time.perf_counter()
            accepted = sum(ingestor.ingest(b).records for b in batches)
            times[name].append((time.perf_counter() - start) / len(msgs) * 1e6)
            assert accepted == len(msgs), f"{name}: {accepted} of {len(msgs)} accepted"
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"auth ingest stage, {len(msgs)} messages in 2,000-message batches: "
          f"{off:.1f} µs per message without verification, {on:.1f} µs with "
          f"(+{on - off:.1f} µs, +{100 * (on - off) / off:.1f} %), median of {rounds} rounds",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5000, help="messages per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--ingest-nodes", type=int, default=5000,
                   help="nodes of the ingest comparison (two messages each)")
    args = p.parse_args()
    worst = 0.0
    for ranks in (8, 2, 32):
        msgs = _messages(ranks, args.messages)
        if ranks == 8:
            worst = max(worst, bench_kind("sample batch, 8 GPUs", msgs["samples"], args.rounds))
        worst = max(worst, bench_kind(f"step batch, {ranks} ranks", msgs["steps"], args.rounds))
    verdict = "meets" if worst < TARGET_VERIFY_US else "MISSES"
    print(f"auth verify worst {worst:.2f} µs per message {verdict} the {TARGET_VERIFY_US:g} µs "
          "target", flush=True)
    bench_ingest(args.ingest_nodes, args.rounds)


if __name__ == "__main__":
    main()
