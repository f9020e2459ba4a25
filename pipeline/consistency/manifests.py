"""The files behind an ``env_fingerprint``: what a ``code_fingerprint`` finding names.

The trainer kit sends a rank's :class:`~trainguard.schemas.ranks.EnvManifest` (file and
version entries, each with a digest) when its fingerprint changes; the fingerprint is the
digest of the manifest. A job keeps the manifests of the fingerprints it saw, at most
``max_manifests`` (the least recently seen goes first), and the first manifest of each
fingerprint stays: a later one claiming the same fingerprint cannot rewrite what a finding
names. A ``code_fingerprint`` fault whose two fingerprints (the rank's against the
majority's, or now against before) both have a manifest gains the names of the entries
that differ: in its summary (the first few) and in evidence (``files_differ``,
``files_differ_count``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from trainguard.pipeline.consistency.findings import Fault
from trainguard.schemas.ranks import EnvManifest

__all__ = ["ManifestMemory", "differing_entries"]

#: Entry names shown in a summary, and listed in evidence.
SHOWN = 3
LISTED = 20


def differing_entries(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Entry names whose digest differs between two manifests (or that one lacks), sorted."""
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


class ManifestMemory:
    """One job's manifests by fingerprint (bounded)."""

    def __init__(self, max_manifests: int) -> None:
        self.max_manifests = max_manifests
        self._by_fingerprint: dict[str, dict[str, str]] = {}
        #: Manifests forgotten to make room (counted, as every cap is).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def add(self, manifests: Sequence[EnvManifest]) -> None:
        """Remember ``manifests`` (a known fingerprint only counts as seen again)."""
        known = self._by_fingerprint
        for m in manifests:
            entries = known.pop(m.fingerprint, None)
            known[m.fingerprint] = m.entries if entries is None else entries
            while len(known) > self.max_manifests:
                del known[next(iter(known))]
                self.evicted += 1

    def differ(self, a: str, b: str) -> list[str] | None:
        """The entries that differ between fingerprints ``a`` and ``b``; None if one is unknown."""
        ma, mb = self._by_fingerprint.get(a), self._by_fingerprint.get(b)
        if ma is None or mb is None:
            return None
        return differing_entries(ma, mb)

    def explain(self, fault: Fault, held: Collection[str | None] = ()) -> Fault:
        """``fault`` (``code_fingerprint``) naming the entries behind its two fingerprints.

        Its two fingerprints are the blamed ranks' (``observed``) and the majority's
        (``expected``, or the value before a change); without a majority (two ranks, or a
        tie), the two values ``held`` by the ranks it blames, when there are exactly two.
        """
        if not self._by_fingerprint:
            return fault
        theirs = fault.observed
        ours = fault.expected if fault.expected is not None else fault.evidence.get("previous")
        names = self.differ(theirs, ours) \
            if isinstance(theirs, str) and isinstance(ours, str) else None
        if names is None:
            pair = sorted({v for v in held if v is not None})
            names = self.differ(pair[0], pair[1]) if len(pair) == 2 else None
        if not names:
            return fault
        shown = ", ".join(names[:SHOWN]) + (f" (+{len(names) - SHOWN} more)"
                                            if len(names) > SHOWN else "")
        return dataclasses.replace(
            fault, summary=f"{fault.summary}; differs: {shown}",
            evidence={**fault.evidence, "files_differ": ",".join(names[:LISTED]),
                      "files_differ_count": len(names)})
