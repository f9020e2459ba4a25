"""code_fingerprint names the files behind two fingerprints from the ranks' manifests."""

from __future__ import annotations

from msgspec.structs import replace

from tests.pipeline.consistency.helpers import T0, FakeJob, feed, first
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.consistency.findings import Fault
from trainguard.pipeline.consistency.manifests import ManifestMemory, differing_entries
from trainguard.schemas.ranks import EnvManifest
from trainguard.schemas.records import StepBatch

GOOD, BAD = "a1" * 32, "b2" * 32
FILES = {f"torch:nn/m{i:02d}.py": f"{i:02d}" * 32 for i in range(30)}
FILES.update({"script:train.py": "aa" * 32, "torch:optim/adamw.py": "cc" * 32,
              "version:torch": "2.5.1"})


def _manifest(fingerprint: str, rank: int, changed: dict[str, str] | None = None
              ) -> EnvManifest:
    return EnvManifest(rank=rank, ts=T0, fingerprint=fingerprint,
                       entries={**FILES, **(changed or {})})


def _job(with_manifests: bool = True, bad: tuple[int, ...] = (2,)) -> list[list[StepBatch]]:
    job = FakeJob(4, gpus=2, noise=False)
    groups = []
    for s in range(1, 8):
        over = {r: {"env_fingerprint": BAD if r in bad else GOOD} for r in range(4)}
        batches = job.step(s, over=over)
        if s == 1 and with_manifests:
            batches[0] = replace(batches[0], manifests=[_manifest(GOOD, 0)])
            batches[1] = replace(batches[1], manifests=[
                _manifest(BAD, 2, {"torch:optim/adamw.py": "ee" * 32})])
        groups.append(batches)
    return groups


def test_a_differing_fingerprint_names_the_files_that_differ():
    [f] = first(feed(ConsistencyStage(), _job()))
    assert f.check == "code_fingerprint" and f.ranks == [2]
    assert f.summary.endswith("; differs: torch:optim/adamw.py")
    assert f.evidence["files_differ"] == "torch:optim/adamw.py"
    assert f.evidence["files_differ_count"] == 1


def test_a_tie_between_two_nodes_still_names_the_files_that_differ():
    # 4 ranks on 2 nodes, a framework file edited on one of them: 2 against 2, no majority.
    [f] = first(feed(ConsistencyStage(), _job(bad=(2, 3))))
    assert f.check == "code_fingerprint" and f.ranks == [0, 1, 2, 3] and f.expected is None
    assert f.evidence["files_differ"] == "torch:optim/adamw.py"


def test_without_manifests_the_finding_is_as_before():
    [f] = first(feed(ConsistencyStage(), _job(with_manifests=False)))
    assert "differs:" not in f.summary and "files_differ" not in f.evidence


def test_many_differing_entries_show_three_and_list_twenty():
    a = dict(FILES)
    b = {k: ("ff" * 32 if k.startswith("torch:nn/") else v) for k, v in FILES.items()}
    b["job:extra.py"] = "11" * 32
    names = differing_entries(a, b)
    assert len(names) == 31 and names[0] == "job:extra.py"
    memory = ManifestMemory(8)
    memory.add([EnvManifest(rank=0, ts=T0, fingerprint=GOOD, entries=a),
                EnvManifest(rank=1, ts=T0, fingerprint=BAD, entries=b)])
    fault = Fault(check="code_fingerprint", category="integrity", entities=(1,), summary="s",
                  first_seen=T0, ts=T0, observed=BAD, expected=GOOD)
    out = memory.explain(fault)
    assert out.summary == "s; differs: job:extra.py, torch:nn/m00.py, torch:nn/m01.py (+28 more)"
    assert out.evidence["files_differ_count"] == 31
    assert len(str(out.evidence["files_differ"]).split(",")) == 20


def test_the_memory_is_bounded_and_the_first_manifest_of_a_fingerprint_stays():
    memory = ManifestMemory(ConsistencyConfig().max_manifests)
    memory.add([EnvManifest(rank=0, ts=T0, fingerprint=GOOD, entries={"a": "1"})])
    memory.add([EnvManifest(rank=1, ts=T0, fingerprint=GOOD, entries={"a": "forged"})])
    memory.add([EnvManifest(rank=0, ts=T0, fingerprint=BAD, entries={"a": "2"})])
    assert memory.differ(GOOD, BAD) == ["a"] and memory.differ(GOOD, "c3" * 32) is None
    for i in range(20):
        memory.add([EnvManifest(rank=0, ts=T0, fingerprint=f"{i:02d}" * 32, entries={})])
    assert len(memory) == 8 and memory.evicted == 14
