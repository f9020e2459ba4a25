"""Checkpoint wrappers: the digest is of exactly the bytes written and read."""

import hashlib

import torch

from trainguard.agents.trainer import checkpoint as ckpt


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_hashes_the_bytes_as_written_and_they_equal_the_file(tmp_path):
    model = torch.nn.Linear(30, 20)
    digest = ckpt.save(model.state_dict(), tmp_path / "m.pt")
    assert digest.sha256 == sha(tmp_path / "m.pt")
    assert digest.path == str((tmp_path / "m.pt").absolute())
    assert digest.nbytes == (tmp_path / "m.pt").stat().st_size


def test_load_returns_the_object_and_the_digest_of_the_bytes_read(tmp_path):
    state = {"w": torch.arange(6.0)}
    saved = ckpt.save(state, tmp_path / "s.pt")
    obj, loaded = ckpt.load(tmp_path / "s.pt")
    assert torch.equal(obj["w"], state["w"])
    assert loaded.sha256 == saved.sha256


def test_a_file_modified_between_save_and_load_gives_another_digest(tmp_path):
    saved = ckpt.save({"w": torch.zeros(100)}, tmp_path / "s.pt")
    data = bytearray((tmp_path / "s.pt").read_bytes())
    data[-30] ^= 1
    (tmp_path / "s.pt").write_bytes(bytes(data))
    try:
        _, loaded = ckpt.load(tmp_path / "s.pt")
    except Exception:  # the zip's CRC may refuse it: the digest is what matters
        loaded = None
    if loaded is not None:
        assert loaded.sha256 != saved.sha256
    assert sha(tmp_path / "s.pt") != saved.sha256


def test_dcp_digest_covers_this_ranks_files_after_save_and_before_load(tmp_path):
    state = {"w": torch.arange(10.0), "b": torch.ones(3)}
    saved = ckpt.dcp_save(state, tmp_path / "dcp")
    files = ckpt.rank_files(tmp_path / "dcp", 0)
    assert [f.name for f in files] == ["__0_0.distcp"]
    assert saved.sha256 == sha(files[0]) and saved.path == str(files[0].resolve())
    target = {"w": torch.zeros(10), "b": torch.zeros(3)}
    loaded = ckpt.dcp_load(target, tmp_path / "dcp")
    assert loaded.sha256 == saved.sha256
    assert torch.equal(target["w"], state["w"])


def test_several_rank_files_are_digested_together_without_a_path(tmp_path):
    (tmp_path / "__1_0.distcp").write_bytes(b"a")
    (tmp_path / "__1_1.distcp").write_bytes(b"b")
    (tmp_path / "__0_0.distcp").write_bytes(b"other rank")
    digest = ckpt.rank_files_digest(tmp_path, 1)
    lines = (f"__1_0.distcp:{hashlib.sha256(b'a').hexdigest()}\n"
             f"__1_1.distcp:{hashlib.sha256(b'b').hexdigest()}\n")
    assert digest.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert digest.path is None and digest.nbytes == 2
