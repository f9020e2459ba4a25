"""Hostile input for each stage: the simulator's valid records, mutated, never make one raise.

A window of a simulated job (a weight-tamper sabotage, so findings flow) is mutated the
way an attacker or a buggy agent could: fields set to extreme or odd values, floats nudged
by float noise, times shifted, keys dropped, list items duplicated, records reordered.
The mutated bytes go through the :class:`Ingestor` (what does not decode is a dead letter)
and the records that decode through :class:`BaselineStage`, :class:`ConsistencyStage` and
:class:`AlertLifecycle`, in a few batches; none may raise. Fixed, derandomized budget.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.baselines import BaselineStage
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.schemas.codec import RecordDecoder, RecordError, encode
from trainguard.schemas.records import Finding
from trainguard.schemas.topics import Topics

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOPICS = Topics("fz")
SPEC = JobSpec(job_id="job-fz", nodes=2, gpus_per_node=4, tp_size=2, checkpoint_every=10,
               checkpoint_pause_s=1, warmup_steps=3)
#: A 2-rank job too: with two voters, float noise in an agreement check has no majority.
PAIR = JobSpec(job_id="job-pair", cluster="sim2", nodes=1, gpus_per_node=2,
               checkpoint_every=10, checkpoint_pause_s=1, warmup_steps=3, node_prefix="pair")


def _simulated() -> list[tuple[str, bytes]]:
    scenario = make_scenario("weight_tamper", SPEC, seed=4, at=12, checkpoint_every=10)
    big, pair = JobSimulator(SPEC, scenario, seed=4), JobSimulator(PAIR, seed=5)
    out: list[tuple[str, bytes]] = []
    for _ in range(45):
        out += [(getattr(TOPICS, e.topic), encode(e.record)) for e in big.tick() + pair.tick()]
    return out


BASE = _simulated()
#: The simulated time at the end of BASE: the ingest window is checked against it (the
#: simulator runs ahead of today's wall clock), and stages run on a fixed wall clock.
SIM_NOW = max(msgspec.json.decode(blob)["ts"] for _, blob in BASE)


def _sim_clock() -> float:
    return SIM_NOW

#: Field values worth trying anywhere: bounds of the wire types and beyond, odd floats.
EDGE = st.sampled_from([
    None, 0, 1, -1, 2**16 - 1, 2**20 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**64,
    0.0, -0.0, 5e-324, 1e-308, 1e-6, 1.5, 1e15, 1e300, 1.7e308, -1e308, "", "x" * 300,
    "\u202e\u0000", "node-00", "job-fz", [], {}, [None], True, False,
]).map(lambda v: msgspec.json.decode(msgspec.json.encode(v)))  # a fresh copy each draw
#: Relative nudges: float noise around the checks' tolerances (1e-6), and gross ones.
NUDGE = st.sampled_from([1.5e-6, -1.5e-6, 5e-7, 2.5e-6, 1e-12, 1e-3, -0.5, 9.0])
#: Time shifts: within the checks' waits, across them, far future and far past.
SHIFT = st.sampled_from([-4e9, -1e6, -3600.0, -5.0, -0.001, 0.001, 3.5, 60.0, 3600.0, 4e9,
                         1e308])
#: Floats the cross-rank checks compare (agreement and peer checks).
FLOAT_STEP_FIELDS = ["lr", "grad_norm", "loss", "local_grad_norm", "compute_time_s"]
NUMERIC_STEP_FIELDS = [*FLOAT_STEP_FIELDS, "step_time_s", "tokens_per_s", "rank", "world_size",
                       "step", "tp_rank", "pp_rank", "dp_rank", "ts", "gpu_index"]


def _walk(draw: st.DrawFn, node: Any) -> tuple[Any, Any]:
    """A random container inside ``node`` and one of its keys (or indices)."""
    for _ in range(draw(st.integers(0, 3))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        deeper = [k for k in keys if isinstance(node[k], dict | list) and node[k]]
        if not deeper:
            break
        node = node[draw(st.sampled_from(deeper))]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    return node, (draw(st.sampled_from(keys)) if keys else None)


def _mutate(draw: st.DrawFn, docs: list[dict[str, Any]]) -> None:
    """One mutation of one of ``docs``; step-level ones go to a step batch."""
    op = draw(st.sampled_from(["step_nudge", "step_edge", "edge", "nudge", "shift", "drop",
                               "dup", "step_nudge"]))
    steps = [s for d in docs if isinstance(d.get("steps"), list)
             for s in d["steps"] if isinstance(s, dict)]
    if op.startswith("step_") and steps:
        step = draw(st.sampled_from(steps))
        if op == "step_edge":
            step[draw(st.sampled_from(NUMERIC_STEP_FIELDS))] = draw(EDGE)
            return
        name = draw(st.sampled_from(FLOAT_STEP_FIELDS))
        if isinstance(step.get(name), float):
            step[name] *= 1 + draw(NUDGE)
        return
    doc = draw(st.sampled_from(docs))
    if op == "shift":
        ts = doc.get("ts")
        doc["ts"] = (ts if type(ts) in (int, float) else 0.0) + draw(SHIFT)
        return
    node, key = _walk(draw, doc)
    if key is None:
        return
    value = node[key]
    if op == "nudge" and isinstance(value, float):
        node[key] = value * (1 + draw(NUDGE))
    elif op == "drop" and isinstance(node, dict):
        del node[key]
    elif op == "dup" and isinstance(node, list):
        node.insert(key, msgspec.json.decode(msgspec.json.encode(value)))
    else:
        node[key] = draw(EDGE)


@st.composite
def hostile_stream(draw: st.DrawFn) -> list[list[RawMessage]]:
    """A window of the simulated job, mutated, reordered a little, cut into batches."""
    start = draw(st.integers(0, len(BASE) - 1))
    window = BASE[start:start + draw(st.integers(1, 90))]
    docs = [(topic, msgspec.json.decode(blob)) for topic, blob in window]
    for _ in range(draw(st.integers(1, 8))):
        _mutate(draw, [doc for _, doc in docs])
    if draw(st.booleans()):
        i, j = draw(st.integers(0, len(docs) - 1)), draw(st.integers(0, len(docs) - 1))
        docs[i], docs[j] = docs[j], docs[i]
    msgs = [RawMessage(topic, 0, n, b"k", msgspec.json.encode(doc), 1_800_000_000.0)
            for n, (topic, doc) in enumerate(docs)]
    cuts = sorted(draw(st.lists(st.integers(0, len(msgs)), max_size=3)))
    bounds = [0, *cuts, len(msgs)]
    return [msgs[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@FUZZ
@given(hostile_stream())
def test_no_mutated_simulator_stream_makes_a_stage_raise(batches: list[list[RawMessage]]) -> None:
    ingestor = Ingestor(TOPICS, clock=_sim_clock)
    baselines, lifecycle = BaselineStage(), AlertLifecycle()
    consistency = ConsistencyStage(clock=_sim_clock)
    latest = -math.inf
    for batch in batches:
        result = ingestor.ingest(batch)
        assert len(result.decoded) + len(result.dead) == len(batch)
        baselines.observe(result.decoded, result.sources)
        baselines.snapshot_rows()
        found = consistency.observe(result.decoded)
        found += consistency.flush()
        lifecycle.observe_findings(found)
        latest = max([latest, *(f.ts for f in found)])
        consistency.stats()
    found = consistency.flush(SIM_NOW + 3600.0)
    lifecycle.observe_findings(found)
    lifecycle.tick(max(latest, SIM_NOW) + 7 * 86400.0)


def _findings() -> list[bytes]:
    stage = ConsistencyStage(clock=_sim_clock)
    decoded = Ingestor(TOPICS, clock=_sim_clock).ingest([RawMessage(t, 0, i, None, b, None)
                                       for i, (t, b) in enumerate(BASE)]).decoded
    found = stage.observe(decoded) + stage.flush(SIM_NOW + 3600.0)
    assert found, "the sabotage must produce findings to mutate"
    return [encode(f) for f in found]


FINDINGS = _findings()
_finding_decoder = RecordDecoder(Finding)


@st.composite
def hostile_findings(draw: st.DrawFn) -> list[Finding]:
    docs = [msgspec.json.decode(draw(st.sampled_from(FINDINGS)))
            for _ in range(draw(st.integers(1, 12)))]
    for _ in range(draw(st.integers(0, 6))):
        _mutate(draw, docs)
    out = []
    for doc in docs:
        try:
            out.append(_finding_decoder.decode(msgspec.json.encode(doc)))
        except RecordError:
            continue
    return out


@FUZZ
@given(hostile_findings(), st.lists(SHIFT, max_size=3))
def test_no_mutated_finding_makes_the_alert_lifecycle_raise(
        findings: list[Finding], ticks: list[float]) -> None:
    lifecycle = AlertLifecycle()
    half = len(findings) // 2
    lifecycle.observe_findings(findings[:half])
    for dt in ticks:
        lifecycle.tick(1_800_000_000.0 + dt)
    lifecycle.observe_findings(findings[half:])
    lifecycle.open_alerts()
