"""Seed fingerprint, data epoch, and the code/env manifest behind ``env_fingerprint``.

**Seed fingerprint** (``StepRecord.seed_fingerprint``): the SHA-256 hex of the canonical
JSON of exactly the random state that every replica must share:

- ``data_seed``: the seed of the data order: ``sampler.seed`` of a
  ``DistributedSampler`` (or any sampler with a ``seed``) passed as ``sampler=``, else
  ``data_seed=``. Replicas that shuffle with different seeds train on overlapping or
  missing data: that is the fault this check finds.
- ``torch_seed``: ``torch.initial_seed()``, only when the job declares it shared
  (``torch_seed_shared=True``: every rank calls ``torch.manual_seed(same)``).

Not in it, by design: per-rank RNG streams that must differ (dropout, augmentation,
``torch.initial_seed()`` when each rank seeds ``base + rank``), and the data **epoch**:
a new epoch re-shuffles the data but is not a new seed. The epoch travels on its own
(``StepRecord.data_epoch``, read from ``sampler.epoch``). With neither a sampler nor a
``data_seed`` there is nothing to compare and the fingerprint is ``None``.

**Manifest** (``reporter.manifest``) and ``env_fingerprint``: ``{name: digest}`` with

- ``script:<file name>``: the SHA-256 of the training script (``__main__.__file__``);
- ``job:<path relative to its code root>``: the job's own modules (those imported from
  files under the script's directory or a ``code_roots`` folder, outside site-packages);
- ``torch:<path relative to the torch package>`` (``lightning:``, ``transformers:`` ...
  likewise): the framework source files the job imported that shape training (the
  optimizers, ``nn``, ``distributed``, ``autograd``, data loading, AMP, serialization);
- ``version:<package>``: python, torch, numpy, trainguard, and transformers, lightning,
  pytorch_lightning when imported.

File digests are the first 32 hex digits of SHA-256 of the bytes (a whole manifest fits
one datagram). ``env_fingerprint`` = SHA-256 hex of the canonical JSON of the manifest
(:func:`manifest_fingerprint`). The manifest is built from ``sys.modules`` at attach.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Final

__all__ = ["FRAMEWORKS", "Manifest", "build_manifest", "canonical_json", "data_epoch",
           "manifest_fingerprint", "sampler_seed", "seed_fingerprint"]

_log = logging.getLogger(__name__)

#: Framework packages and the module prefixes (relative paths, "/" separated) whose files
#: shape training; "" takes every imported file of the package.
FRAMEWORKS: Final[Mapping[str, tuple[str, ...]]] = {
    "torch": ("optim/", "nn/", "distributed/", "autograd/", "utils/data/", "amp/",
              "cuda/amp/", "cpu/amp/", "_tensor.py", "functional.py", "random.py",
              "serialization.py", "_utils.py"),
    "transformers": ("trainer.py", "trainer_", "training_args.py", "optimization.py",
                     "modeling_utils.py", "data/"),
    "lightning": ("pytorch/trainer/", "pytorch/loops/", "pytorch/core/", "fabric/"),
    "pytorch_lightning": ("trainer/", "loops/", "core/"),
}
_VERSIONS: Final = ("torch", "numpy", "trainguard", "transformers", "lightning",
                    "pytorch_lightning")
_DIGEST_CHARS: Final = 32
_SITE: Final = ("site-packages", "dist-packages")


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes a fingerprint hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def seed_fingerprint(data_seed: int | None, torch_seed: int | None = None) -> str | None:
    """The seed fingerprint (see the module notes); ``None`` with nothing to compare."""
    if data_seed is None and torch_seed is None:
        return None
    state: dict[str, int] = {}
    if data_seed is not None:
        state["data_seed"] = int(data_seed)
    if torch_seed is not None:
        state["torch_seed"] = int(torch_seed)
    return hashlib.sha256(canonical_json(state)).hexdigest()


def sampler_seed(sampler: Any) -> int | None:
    """``sampler.seed`` when it has one (``DistributedSampler``), else ``None``."""
    seed = getattr(sampler, "seed", None)
    return int(seed) if isinstance(seed, int) else None


def data_epoch(sampler: Any) -> int | None:
    """``sampler.epoch`` (set by ``set_epoch``) when it has one, else ``None``."""
    epoch = getattr(sampler, "epoch", None)
    return int(epoch) if isinstance(epoch, int) and epoch >= 0 else None


def manifest_fingerprint(entries: Mapping[str, str]) -> str:
    """``env_fingerprint``: SHA-256 hex of the manifest's canonical JSON."""
    return hashlib.sha256(canonical_json(dict(entries))).hexdigest()


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:_DIGEST_CHARS]
    except OSError:
        return None


def _module_file(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    return file if isinstance(file, str) and file.endswith(".py") else None


@dataclass(frozen=True)
class Manifest:
    """The manifest and its fingerprint; ``seconds`` it took to build."""

    entries: dict[str, str]
    fingerprint: str
    seconds: float = 0.0


def _framework_entries(modules: Mapping[str, ModuleType]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for package, prefixes in FRAMEWORKS.items():
        root_module = modules.get(package)
        root_file = _module_file(root_module) if root_module is not None else None
        if root_file is None:
            continue
        root = os.path.dirname(root_file) + os.sep
        for name, module in list(modules.items()):
            if name != package and not name.startswith(package + "."):
                continue
            file = _module_file(module)
            if file is None or not file.startswith(root):
                continue
            relative = file[len(root):].replace(os.sep, "/")
            if any(relative.startswith(p) for p in prefixes):
                digest = _file_digest(file)
                if digest is not None:
                    entries[f"{package}:{relative}"] = digest
    return entries


def _job_entries(modules: Mapping[str, ModuleType], roots: Iterable[Path],
                 script: str | None) -> dict[str, str]:
    entries: dict[str, str] = {}
    resolved = [str(r.resolve()) + os.sep for r in roots]
    for name, module in list(modules.items()):
        file = _module_file(module)
        if file is None or name == "trainguard" or name.startswith("trainguard."):
            continue  # trainguard is in the versions, not the job's code
        path = os.path.realpath(file)
        if path == script or any(s in path for s in _SITE):
            continue
        for root in resolved:
            if path.startswith(root):
                digest = _file_digest(path)
                if digest is not None:
                    entries[f"job:{path[len(root):].replace(os.sep, '/')}"] = digest
                break
    return entries


def _versions(modules: Mapping[str, ModuleType]) -> dict[str, str]:
    out = {"version:python": platform.python_version()}
    for package in _VERSIONS:
        if package not in modules and package != "trainguard":
            continue
        try:
            out[f"version:{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = getattr(modules.get(package), "__version__", None)
            if isinstance(version, str):
                out[f"version:{package}"] = version
    return out


def build_manifest(code_roots: Iterable[str | os.PathLike[str]] = (),
                   modules: Mapping[str, ModuleType] | None = None,
                   script: str | None = None) -> Manifest:
    """The manifest of this process now (see the module notes)."""
    import time

    started = time.perf_counter()
    modules = dict(sys.modules if modules is None else modules)
    if script is None:
        main = modules.get("__main__")
        script = _module_file(main) if main is not None else None
    entries: dict[str, str] = {}
    roots = [Path(r) for r in code_roots]
    script_path = os.path.realpath(script) if script else None
    if script_path is not None:
        digest = _file_digest(script_path)
        if digest is not None:
            entries[f"script:{os.path.basename(script_path)}"] = digest
        roots.insert(0, Path(script_path).parent)
    entries.update(_job_entries(modules, roots, script_path))
    entries.update(_framework_entries(modules))
    entries.update(_versions(modules))
    entries = dict(sorted(entries.items()))
    return Manifest(entries, manifest_fingerprint(entries), time.perf_counter() - started)
