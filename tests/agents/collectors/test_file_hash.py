"""The witness's hasher: SHA-256 of the bytes, within a budget, with counted skips."""

import hashlib
import os

from trainguard.agents.collectors.file_hash import Hasher


def test_a_file_hashes_to_the_sha256_of_its_bytes(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "shard.pt"
    path.write_bytes(data)
    got = Hasher(mb_per_s=0, max_file_bytes=1 << 30).hash_file(path)
    assert got is not None and got.digest == hashlib.sha256(data).hexdigest()
    assert got.size == len(data) and got.skipped is None


def test_a_file_over_the_cap_is_skipped_with_its_reason(tmp_path):
    path = tmp_path / "huge.pt"
    path.write_bytes(b"x" * 2000)
    hasher = Hasher(mb_per_s=0, max_file_bytes=1000)
    got = hasher.hash_file(path)
    assert got is not None and got.digest is None and got.skipped == "too_large"
    assert got.size == 2000 and hasher.skipped == {"too_large": 1} and hasher.hashed == 0


def test_missing_files_and_directories_are_counted_not_raised(tmp_path):
    hasher = Hasher(mb_per_s=0, max_file_bytes=1 << 20)
    assert hasher.hash_file(tmp_path / "gone.pt") is None
    assert hasher.hash_file(tmp_path) is None
    assert hasher.skipped == {"vanished": 1, "not_a_file": 1}


def test_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "real").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    hasher = Hasher(mb_per_s=0, max_file_bytes=1 << 20)
    assert hasher.hash_file(tmp_path / "link") is None
    assert hasher.skipped == {"unreadable": 1}


def test_the_budget_paces_the_reads_at_the_configured_rate(tmp_path):
    path = tmp_path / "shard.pt"
    path.write_bytes(b"\0" * (8 * 1024 * 1024))
    now = [0.0]
    waited = []

    def wait(seconds):
        waited.append(seconds)
        now[0] += seconds
        return False

    hasher = Hasher(mb_per_s=4.0, max_file_bytes=1 << 30, wait=wait, clock=lambda: now[0])
    assert hasher.hash_file(path).digest == hashlib.sha256(b"\0" * (8 << 20)).hexdigest()
    # 8 MiB at 4 MB/s: about 2.1 s of pauses, less the bucket's quarter-second burst.
    assert 8 * 1024 * 1024 / 4e6 - 0.3 < sum(waited) <= 8 * 1024 * 1024 / 4e6


def test_a_stop_while_pausing_abandons_the_file(tmp_path):
    path = tmp_path / "shard.pt"
    path.write_bytes(b"\0" * (4 * 1024 * 1024))
    hasher = Hasher(mb_per_s=1.0, max_file_bytes=1 << 30, wait=lambda s: True,
                    clock=lambda: 0.0)
    assert hasher.hash_file(path) is None
    assert hasher.skipped == {"stopped": 1} and hasher.hashed == 0
