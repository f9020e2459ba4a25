"""Decoded records stay out of the cyclic garbage collector (``gc=False``): a cost, not a leak."""

import gc

from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import (
    Finding,
    GpuSample,
    GpuSampleBatch,
    StepBatch,
    StepRecord,
)

_STEP = StepRecord(job_id="j", rank=0, world_size=2, node="n", step=1, ts=1.0, nonfinite=("loss",))


def test_decoded_sample_batches_and_their_gpus_are_not_tracked_by_the_collector():
    batch = GpuSampleBatch(cluster="c", node="n", ts=1.0, seq=0, agent_id="a",
                           gpus=[GpuSample(index=0, errors={"power_w": "x"}), GpuSample(index=1)])
    decoded = RecordDecoder(GpuSampleBatch).decode(encode(batch))
    assert decoded == batch
    assert not gc.is_tracked(decoded) and not any(gc.is_tracked(g) for g in decoded.gpus)
    # Their lists are ordinary containers, tracked as always.
    assert gc.is_tracked(decoded.gpus)


def test_decoded_step_batches_and_their_steps_are_not_tracked_by_the_collector():
    batch = StepBatch(cluster="c", node="n", job_id="j", ts=1.0, seq=0, agent_id="a",
                      steps=[_STEP, _STEP])
    decoded = RecordDecoder(StepBatch).decode(encode(batch))
    assert decoded == batch and decoded.steps[1].nonfinite == ("loss",)
    assert not gc.is_tracked(decoded) and not any(gc.is_tracked(s) for s in decoded.steps)


def test_an_untracked_record_is_freed_when_its_last_reference_goes():
    import weakref

    class Probe:
        pass

    probe = Probe()
    finding = Finding(finding_id="f", cluster="c", job_id="j", check="lr_mismatch",
                      category="integrity", first_seen=1.0, ts=1.0, ranks=[0], nodes=["n"],
                      observed=1.0, expected=2.0, summary="s", evidence={"p": probe},
                      check_version="1")
    gone = weakref.ref(probe)
    del probe, finding
    assert gone() is None


def test_absent_lists_decode_to_no_new_container():
    """An absent ``xid_events``/``processes``/``nonfinite``/``events`` is the shared ``()``.

    A list default is a new, collector-tracked list per record: 29 per pair of messages
    of 8 GPUs and 8 ranks, which made the collector walk every live batch (issue #17).
    """
    samples = GpuSampleBatch(cluster="c", node="n", ts=1.0, seq=0, agent_id="a",
                             gpus=[GpuSample(index=i) for i in range(8)])
    steps = StepBatch(cluster="c", node="n", job_id="j", ts=1.0, seq=0, agent_id="a",
                      steps=[StepRecord(job_id="j", rank=r, world_size=8, node="n", step=1,
                                        ts=1.0) for r in range(8)])
    got_samples = RecordDecoder(GpuSampleBatch).decode(encode(samples))
    got_steps = RecordDecoder(StepBatch).decode(encode(steps))
    empties = [*(g.xid_events for g in got_samples.gpus), *(g.processes for g in got_samples.gpus),
               *(s.nonfinite for s in got_steps.steps), got_steps.claims, got_steps.events,
               got_steps.manifests]
    assert all(e == () and not gc.is_tracked(e) for e in empties)
    # Only the two lists of the messages' own records remain for the collector.
    tracked = [o for o in (got_samples.gpus, got_steps.steps, *empties) if gc.is_tracked(o)]
    assert tracked == [got_samples.gpus, got_steps.steps]
