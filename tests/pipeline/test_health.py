from trainguard.pipeline.health import HealthProbe
from trainguard.pipeline.sinks.store_sink import SinkCounters


def test_the_first_probe_has_levels_and_the_second_rates():
    clock = iter([100.0, 105.0]).__next__
    probe = HealthProbe("w1", clock=clock)
    first = probe.rows(consumed=1000, rejected=2, sink=SinkCounters(rows=10, lines=990,
                                                                   last_batch_s=0.012),
                       lag={("tg.steps.v1", 1): 40, ("tg.gpu-samples.v1", 0): -3},
                       extra={"alerts_queued": 1})
    by = {(r["metric"], r["topic"], r["partition"]): r["value"] for r in first}
    assert "ingest_msgs_per_s" not in {m for m, _, _ in by}  # no rate from one probe
    assert by["dead_letters_total", "", -1] == 2.0
    assert by["sink_batch_ms", "", -1] == 12.0
    assert by["consumer_lag", "tg.steps.v1", 1] == 40.0
    assert by["consumer_lag", "tg.gpu-samples.v1", 0] == 0.0  # never negative
    assert by["alerts_queued", "", -1] == 1.0
    second = probe.rows(consumed=1500, rejected=2, sink=SinkCounters(rows=20, lines=1480),
                        lag={})
    rates = {r["metric"]: r["value"] for r in second}
    assert rates["ingest_msgs_per_s"] == 100.0 and rates["records_per_s"] == 100.0
    assert {r["worker"] for r in first + second} == {"w1"} and first[0]["ts"] == 100.0
