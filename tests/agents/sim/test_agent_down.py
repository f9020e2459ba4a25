"""The simulator's stopped agent: a node that sends nothing while its ranks train on."""

from trainguard.agents.sim import JobSimulator, JobSpec
from trainguard.schemas.records import CheckpointEvent, Heartbeat, StepBatch

SPEC = JobSpec(nodes=3, gpus_per_node=4, checkpoint_every=10, checkpoint_pause_s=2)


def _node(e) -> str:
    return e.record.node


def test_a_stopped_agents_node_sends_nothing_and_the_others_carry_on():
    sim = JobSimulator(SPEC, seed=1)
    before = sim.run(10)
    sim.knobs.agent_down.add(1)
    during = sim.run(30)
    assert {_node(e) for e in before} == {"node-00", "node-01", "node-02"}
    assert {_node(e) for e in during} == {"node-00", "node-02"}
    beats = [e for e in during if isinstance(e.record, Heartbeat)]
    assert {e.record.node for e in beats} == {"node-00", "node-02"}
    saves = [e.record for e in during if isinstance(e.record, CheckpointEvent)]
    assert saves and all(s.rank // 4 != 1 for s in saves)
    # Its ranks train on: the job's steps go forward on the other nodes.
    def last_step(emits):
        return max(s.step for e in emits if isinstance(e.record, StepBatch)
                   for s in e.record.steps)

    assert last_step(during) > last_step(before)


def test_the_agent_coming_back_resumes_its_nodes_records():
    sim = JobSimulator(SPEC, seed=1)
    sim.knobs.agent_down.add(2)
    sim.run(5)
    sim.knobs.agent_down.clear()
    assert "node-02" in {_node(e) for e in sim.run(5)}
