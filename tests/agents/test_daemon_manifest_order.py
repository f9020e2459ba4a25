"""NodeAgent: a manifest reaches the worker before the steps of its tick, events after them.

A ``code_fingerprint`` finding names the files that differ only when the worker holds the
manifest behind the fingerprint as the step is judged (found in the real-job e2e test,
where a rank's manifest and its first steps reached the agent in the same tick).
"""

from tests.agents.test_daemon import RecordingTransport, _config
from tests.agents.test_daemon_rank_reports import T0, _event, _manifest, _once, _step_batches
from trainguard.agents.collectors import SimulatedGpus
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.rank_events import JobRankReports
from trainguard.schemas.records import StepRecord


def test_the_manifest_precedes_the_steps_of_its_tick_and_events_follow_them():
    transport = RecordingTransport()
    step = StepRecord(job_id="job-1", rank=0, world_size=2, node="node-a", step=0, ts=T0)
    agent = NodeAgent(_config(), SimulatedGpus("node-a", 2), transport,
                      step_sources=[lambda: [step]],
                      rank_sources=[_once({"job-1": JobRankReports(
                          events=[_event()], manifests=[_manifest()])})])
    agent.tick(T0)
    batches = [b for _, b in _step_batches(transport)]
    assert [(len(b.manifests), len(b.steps), len(b.events)) for b in batches] == [
        (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert [b.seq for b in batches] == sorted({b.seq for b in batches})
    assert agent.manifests_sent == 1 and agent.rank_events_sent == 1
