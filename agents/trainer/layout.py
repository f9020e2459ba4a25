"""The parallel layout of a rank: which ranks must hold identical parameters.

A replica group is the ranks with equal ``(tp_rank, pp_rank, shard, ep_rank)``; its
members must agree on the parameter digest and the seed fingerprint. This module reads
those coordinates from the model:

- a plain module, or ``DistributedDataParallel``: pure data parallel, every rank a
  replica (``dp_rank`` = rank in DDP's process group);
- FSDP (``FullyShardedDataParallel``): ``NO_SHARD`` is data parallel;
  ``FULL_SHARD``/``SHARD_GRAD_OP`` give every rank its own shard (``shard`` = rank in the
  FSDP process group, no replicas); ``HYBRID_SHARD``/``_HYBRID_SHARD_ZERO2`` shard within
  a group and replicate across groups (``shard`` = rank in the shard group, ``dp_rank``
  = rank in the replicate group);
- FSDP2 (``fully_shard``) and DTensor parameters: from the parameters' DeviceMesh and
  placements: mesh dimensions named ``tp``, ``pp``, ``ep`` give those ranks, other
  dimensions where the parameters are ``Shard`` give ``shard`` (several: flattened), and
  ``Replicate`` dimensions give ``dp_rank``;
- anything else: pass ``layout=Layout(...)`` (explicit coordinates win).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Layout", "detect_layout", "layout_from_mesh"]

_log = logging.getLogger(__name__)

_NAMED = {"tp": "tp_rank", "pp": "pp_rank", "ep": "ep_rank"}
_SHARDED = {"FULL_SHARD", "SHARD_GRAD_OP"}
_HYBRID = {"HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"}


@dataclass(frozen=True)
class Layout:
    """A rank's coordinates; ``None`` = the dimension is not used."""

    tp_rank: int | None = None
    pp_rank: int | None = None
    shard: int | None = None
    ep_rank: int | None = None
    dp_rank: int | None = None

    def __post_init__(self) -> None:
        for name in ("tp_rank", "pp_rank", "shard", "ep_rank", "dp_rank"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"Layout {name}={value!r}: expected an int >= 0 or None")

    @property
    def sharded(self) -> bool:
        """True when this rank holds a shard (its digest covers only its shard)."""
        return self.shard is not None

    def reporter_options(self) -> dict[str, int | None]:
        """The :class:`~trainguard.agents.reporter.StepReporter` keyword arguments."""
        return {"tp_rank": self.tp_rank, "pp_rank": self.pp_rank, "shard": self.shard,
                "ep_rank": self.ep_rank, "dp_rank": self.dp_rank}


def _group_rank(group: Any) -> int | None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return int(dist.get_rank(group))
    except (RuntimeError, ValueError):
        return None


def layout_from_mesh(mesh: Any, placements: Any = None) -> Layout:
    """Coordinates from a DeviceMesh (and the parameters' placements, when known)."""
    names = list(mesh.mesh_dim_names or ())
    coords = mesh.get_coordinate() or []
    found: dict[str, int] = {}
    shard_index, shard_size = 0, 0
    dp_index, dp_size = 0, 0
    for dim, coord in enumerate(coords):
        name = names[dim] if dim < len(names) else f"dim{dim}"
        size = mesh.size(dim)
        if name in _NAMED:
            found[_NAMED[name]] = int(coord)
            continue
        placement = placements[dim] if placements is not None and dim < len(placements) \
            else None
        if placement is not None:
            is_shard = placement.is_shard()
        else:  # no parameters to ask: go by the conventional names
            is_shard = name in ("shard", "dp_shard", "fsdp", "dp_shard_cp")
        if is_shard:
            shard_index, shard_size = shard_index * size + int(coord), max(shard_size, 1) * size
        else:
            dp_index, dp_size = dp_index * size + int(coord), max(dp_size, 1) * size
    return Layout(
        tp_rank=found.get("tp_rank"), pp_rank=found.get("pp_rank"),
        ep_rank=found.get("ep_rank"),
        shard=shard_index if shard_size else None,
        dp_rank=dp_index if dp_size else None,
    )


def _fsdp1(model: Any) -> Layout | None:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not imported: the model is not FSDP
    if fsdp is None or not isinstance(model, fsdp.FullyShardedDataParallel):
        return None
    strategy = getattr(model.sharding_strategy, "name", str(model.sharding_strategy))
    if strategy in _HYBRID:
        replicate = getattr(model, "_inter_node_pg", None)
        return Layout(shard=_group_rank(model.process_group),
                      dp_rank=_group_rank(replicate) if replicate is not None else None)
    if strategy in _SHARDED:
        return Layout(shard=_group_rank(model.process_group))
    return Layout(dp_rank=_group_rank(model.process_group))


def _dtensor_layout(model: Any) -> Layout | None:
    for param in model.parameters():
        mesh = getattr(param, "device_mesh", None)
        if mesh is not None and hasattr(param, "placements"):
            return layout_from_mesh(mesh, param.placements)
    return None


def detect_layout(model: Any) -> Layout:
    """The model's layout (see the module notes); pure data parallel when unsure."""
    fsdp = _fsdp1(model)
    if fsdp is not None:
        return fsdp
    mesh_layout = _dtensor_layout(model)
    if mesh_layout is not None:
        return mesh_layout
    group = getattr(model, "process_group", None)
    rank = _group_rank(group) if hasattr(model, "process_group") else _group_rank(None)
    return Layout(dp_rank=rank)
