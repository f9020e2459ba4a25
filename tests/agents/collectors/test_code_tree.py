"""Code tree fingerprints: a Merkle digest, cached per file, naming the files that changed."""

import hashlib
import os
import time

from trainguard.agents.collectors.code_tree import CodeTree
from trainguard.agents.collectors.file_hash import Hasher


def _tree(root, **kw):
    (root / "nn").mkdir(parents=True)
    (root / "nn" / "functional.py").write_text("def relu(x): return max(x, 0)\n")
    (root / "__init__.py").write_text("")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    hasher = Hasher(mb_per_s=0, max_file_bytes=1 << 20)
    return CodeTree(root, hasher, exclude=("__pycache__", "*.pyc"), **kw), hasher


def test_the_digest_is_over_sorted_relative_paths_and_file_digests(tmp_path):
    tree, _ = _tree(tmp_path / "torch")
    fp = tree.fingerprint()
    lines = [f"__init__.py\0{hashlib.sha256(b'').hexdigest()}\n",
             "nn/functional.py\0"
             + hashlib.sha256(b"def relu(x): return max(x, 0)\n").hexdigest() + "\n"]
    assert fp.digest == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert fp.files == 2 and fp.changed == ()


def test_an_unchanged_tree_is_not_read_again(tmp_path):
    tree, hasher = _tree(tmp_path / "torch")
    first = tree.fingerprint()
    assert hasher.hashed == 2
    again = tree.fingerprint()
    assert again.digest == first.digest and again.changed == () and hasher.hashed == 2


def test_a_modified_file_is_named_even_with_its_old_mtime_put_back(tmp_path):
    root = tmp_path / "torch"
    tree, _ = _tree(root)
    first = tree.fingerprint()
    target = root / "nn" / "functional.py"
    st = os.stat(target)
    time.sleep(0.05)  # past the file system's timestamp granularity (a kernel tick)
    target.write_text("def relu(x): return min(x, 0)\n")  # the same size, a new behaviour
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -d: the old mtime
    assert os.stat(target).st_size == st.st_size
    second = tree.fingerprint()
    assert second.digest != first.digest
    assert second.changed == ("nn/functional.py",)


def test_added_and_removed_files_are_named_and_caches_are_ignored(tmp_path):
    root = tmp_path / "torch"
    tree, _ = _tree(root)
    tree.fingerprint()
    (root / "__init__.py").unlink()
    (root / "backdoor.py").write_text("import os\n")
    (root / "__pycache__" / "y.pyc").write_bytes(b"\1")
    assert tree.fingerprint().changed == ("__init__.py", "backdoor.py")


def test_a_missing_root_has_no_digest(tmp_path):
    tree = CodeTree(tmp_path / "nope", Hasher(mb_per_s=0, max_file_bytes=1))
    assert tree.fingerprint().digest is None
