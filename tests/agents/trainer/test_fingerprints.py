"""Seed fingerprint, data epoch and the code/env manifest."""

import hashlib
import importlib
import json
import sys

import pytest
import torch
import torch.optim  # noqa: F401  (the manifest lists what the job imported)
from torch.utils.data import DistributedSampler

from trainguard.agents.trainer.fingerprints import (
    build_manifest,
    canonical_json,
    data_epoch,
    manifest_fingerprint,
    sampler_seed,
    seed_fingerprint,
)


def test_seed_fingerprint_is_sha256_of_the_canonical_shared_state():
    expected = hashlib.sha256(b'{"data_seed":42}').hexdigest()
    assert seed_fingerprint(42) == expected
    assert seed_fingerprint(42, 7) == hashlib.sha256(
        b'{"data_seed":42,"torch_seed":7}').hexdigest()
    assert seed_fingerprint(None) is None
    assert seed_fingerprint(42) != seed_fingerprint(43)


def test_the_sampler_gives_the_seed_and_a_new_epoch_does_not_change_the_fingerprint():
    sampler = DistributedSampler(list(range(10)), num_replicas=2, rank=1, seed=11)
    before = seed_fingerprint(sampler_seed(sampler))
    assert data_epoch(sampler) == 0
    sampler.set_epoch(3)
    assert data_epoch(sampler) == 3
    assert seed_fingerprint(sampler_seed(sampler)) == before
    assert sampler_seed(object()) is None and data_epoch(object()) is None


@pytest.fixture
def job(tmp_path, monkeypatch):
    pkg = tmp_path / "myjob"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("WIDTH = 4\n")
    script = tmp_path / "train.py"
    script.write_text("print('train')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("myjob.model")
    yield tmp_path, script
    for name in ("myjob", "myjob.model"):
        sys.modules.pop(name, None)


def test_the_manifest_names_script_job_framework_files_and_versions(job):
    root, script = job
    m = build_manifest(script=str(script))
    assert m.entries["script:train.py"] == hashlib.sha256(script.read_bytes()).hexdigest()[:32]
    assert "job:myjob/model.py" in m.entries and "job:myjob/__init__.py" in m.entries
    assert "torch:optim/sgd.py" in m.entries
    assert "torch:nn/modules/linear.py" in m.entries
    assert not any(k.startswith("job:") and "trainguard" in k for k in m.entries)
    assert m.entries["version:torch"] == torch.__version__.split("+")[0] or \
        m.entries["version:torch"].startswith(torch.__version__.split("+")[0])
    assert "version:python" in m.entries and "version:trainguard" in m.entries
    assert m.fingerprint == hashlib.sha256(canonical_json(m.entries)).hexdigest()
    assert m.fingerprint == manifest_fingerprint(m.entries)
    assert len(json.dumps(m.entries)) < 60_000  # fits one datagram


def test_editing_a_job_file_changes_its_entry_and_the_fingerprint(job):
    root, script = job
    before = build_manifest(script=str(script))
    (root / "myjob" / "model.py").write_text("WIDTH = 5\n")
    after = build_manifest(script=str(script))
    changed = {k for k in before.entries if before.entries[k] != after.entries.get(k)}
    assert changed == {"job:myjob/model.py"}
    assert after.fingerprint != before.fingerprint


def test_code_roots_add_folders_outside_the_script_dir(job, tmp_path_factory):
    root, _ = job
    other = tmp_path_factory.mktemp("elsewhere")
    script = other / "run.py"
    script.write_text("")
    without = build_manifest(script=str(script))
    assert not any(k.startswith("job:myjob") for k in without.entries)
    with_root = build_manifest(code_roots=[root], script=str(script))
    assert "job:myjob/model.py" in with_root.entries
