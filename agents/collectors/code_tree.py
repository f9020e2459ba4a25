"""Fingerprints of code trees: a Merkle-style digest that names the files that changed.

The digest of a tree is the SHA-256 over its sorted ``relative path NUL file digest LF``
lines, so two trees with the same files and bytes have the same digest wherever they are.
Each file's SHA-256 is cached by its ``(size, mtime, ctime, inode)``: a periodic pass only
stats the tree and re-hashes the files that changed (the change time cannot be set back by
a user, so ``touch -d`` does not hide an edit). The per-file digests of the previous pass
are kept, so a change is named: added, removed or modified relative paths.

A symbolic link counts as its target's text (a swapped link changes the digest); a file
over the hasher's size cap counts as its size and times (its content is not read).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainguard.agents.collectors.file_hash import Hasher, Identity, identity

__all__ = ["CodeTree", "TreeFingerprint"]


@dataclass(frozen=True, slots=True)
class TreeFingerprint:
    """One pass over a tree: its digest, size, files, and what changed since the last pass.

    ``digest`` is ``None`` when the tree could not be read (missing root).
    """

    digest: str | None
    size: int
    files: int
    #: Relative paths added, removed or modified since the previous pass, sorted.
    changed: tuple[str, ...]
    #: Files left out because the tree held more than ``max_files``.
    left_out: int = 0
    #: Files that could not be hashed this pass (they keep their previous digest).
    unreadable: int = 0


class CodeTree:
    """A code tree's fingerprint, pass after pass, re-hashing only what changed."""

    def __init__(self, root: Path, hasher: Hasher, *, exclude: Sequence[str] = (),
                 max_files: int = 200_000) -> None:
        self.root = root
        self._hasher = hasher
        self._exclude = tuple(exclude)
        self._max_files = max_files
        #: relative path → (identity, digest) of the previous pass.
        self._files: dict[str, tuple[Identity, str]] = {}
        self.passes = 0

    def fingerprint(self) -> TreeFingerprint:
        """Walk the tree, hash what changed, and return the tree's digest and changes."""
        if not os.path.isdir(self.root):
            return TreeFingerprint(None, 0, 0, ())
        current: dict[str, tuple[Identity, str]] = {}
        size = left_out = unreadable = 0
        for rel, st in self._walk():
            if len(current) >= self._max_files:
                left_out += 1
                continue
            ident = identity(st)
            cached = self._files.get(rel)
            if cached is not None and cached[0] == ident:
                current[rel] = cached
            else:
                digest = self._digest(rel, st)
                if digest is None:
                    unreadable += 1
                    if cached is None:
                        continue
                    digest = cached[1]
                current[rel] = (ident, digest)
            size += st.st_size
        changed = sorted(
            {rel for rel in current if self._files.get(rel, (None, None))[1] != current[rel][1]}
            | (self._files.keys() - current.keys())
        ) if self.passes else []
        self._files = current
        self.passes += 1
        tree = hashlib.sha256()
        for rel in sorted(current):
            tree.update(f"{rel}\0{current[rel][1]}\n".encode("utf-8", "surrogateescape"))
        return TreeFingerprint(tree.hexdigest(), size, len(current), tuple(changed), left_out,
                               unreadable)

    def _digest(self, rel: str, st: os.stat_result) -> str | None:
        path = os.path.join(self.root, rel)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                return None
            return hashlib.sha256(b"symlink\0" + os.fsencode(target)).hexdigest()
        if st.st_size > self._hasher.max_file_bytes:
            return hashlib.sha256(f"large\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        hashed = self._hasher.hash_file(Path(path))
        return hashed.digest if hashed is not None else None

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        """``(relative path, lstat)`` of every file and link under the root, sorted."""
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not self._excluded(d))
            # A link to a directory is listed with the directories and not followed: it
            # counts as a link.
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in sorted([*filenames, *links]):
                if self._excluded(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    yield os.path.relpath(path, root), st

    def _excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self._exclude)
