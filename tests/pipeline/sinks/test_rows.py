import time

from trainguard.pipeline.sinks.rows import rows_for
from trainguard.schemas.records import Alert, GpuSample, GpuSampleBatch, XidEvent

NOW = time.time()


def test_unreported_gpu_fields_become_null_and_xids_a_list():
    batch = GpuSampleBatch(
        cluster="c",
        node="n",
        ts=NOW,
        seq=0,
        agent_id="a",
        gpus=[
            GpuSample(
                index=3,
                util_gpu_pct=50.0,
                xid_events=[XidEvent(xid=48, ts=NOW), XidEvent(xid=79, ts=NOW)],
            ),
            GpuSample(index=4, lost=True),
        ],
    )
    rows = list(rows_for(batch))
    batch_row = rows[0][1]
    assert (
        rows[0][0] == "sample_batches"
        and batch_row["lost_gpus"] == 1
        and batch_row["gpu_count"] == 2
    )
    gpu = rows[1][1]
    assert gpu["gpu"] == 3 and gpu["power_w"] is None and gpu["xids"] == [48, 79]
    assert rows[2][1]["lost"] is True


def test_alert_evidence_is_stored_as_json_text():
    alert = Alert(
        alert_id="a",
        fingerprint="f",
        status="firing",
        severity="page",
        check="loss",
        summary="s",
        cluster="c",
        ts=NOW,
        starts_at=NOW,
        evidence={"z": 4.5, "peer": "r3"},
    )
    ((table, row),) = list(rows_for(alert))
    assert table == "alerts" and row["evidence"] == '{"z":4.5,"peer":"r3"}'
