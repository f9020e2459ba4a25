"""Sabotage from outside the training script: a checkpoint shard edited on disk, and a node
with a torch tree of its own whose framework file is edited (for the real-job e2e tests)."""

from __future__ import annotations

import os
import struct
import time
import zipfile
from importlib.util import find_spec
from pathlib import Path


def tamper_shard(path: Path, factor: float = 1.001) -> float:
    """Scale the first value of the first tensor stored in a ``torch.save`` file, in place
    (its zip entry ``*/data/0``: stored uncompressed, and ``torch.load`` checks no CRC), as an
    insider editing a checkpoint shard would; the time it was done."""
    with zipfile.ZipFile(path) as archive:
        [entry] = [i for i in archive.infolist() if i.filename.endswith("/data/0")]
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, entry.header_offset + 26)
    start = entry.header_offset + 30 + name_len + extra_len
    (value,) = struct.unpack_from("<f", data, start)
    struct.pack_into("<f", data, start, value * factor if value else 1e-3)
    path.write_bytes(bytes(data))
    return time.time()


def mirror_torch(dest: Path) -> Path:
    """A torch tree of this node's own: real directories, every file a symlink to the real one.

    Put ``dest`` first on the node's ``PYTHONPATH``; :func:`edit_framework_file` then
    replaces one file by an edited copy without touching the shared install. Files are
    linked one by one (not whole directories), so whoever walks the tree sees the same
    names on every node.
    """
    spec = find_spec("torch")
    if spec is None or spec.origin is None:
        raise RuntimeError("torch is not installed: run `make install-torch`")
    src = Path(spec.origin).parent
    root = dest / "torch"
    for dirpath, dirnames, filenames in os.walk(src):
        here = root / Path(dirpath).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                os.symlink(os.path.join(dirpath, name), here / name)
                dirnames.remove(name)
        for name in filenames:
            os.symlink(os.path.join(dirpath, name), here / name)
    return dest


def edit_framework_file(mirror: Path, relative: str = "optim/sgd.py") -> Path:
    """Replace one file of a node's torch tree by an edited copy; its path."""
    target = mirror / "torch" / relative
    text = target.read_text()
    target.unlink()
    target.write_text(text + "\n_EDITED_ON_THIS_NODE = True  # the insider's change\n")
    for pyc in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
        pyc.unlink()
    return target
