"""Parallel layouts → the coordinates that decide who must agree."""

import pytest
import torch

from trainguard.agents.trainer.layout import Layout, detect_layout, layout_from_mesh


class Mesh:
    def __init__(self, names, shape, coords):
        self.mesh_dim_names, self._shape, self._coords = names, shape, coords

    def get_coordinate(self):
        return self._coords

    def size(self, dim):
        return self._shape[dim]


class Placement:
    def __init__(self, shard):
        self._shard = shard

    def is_shard(self):
        return self._shard


S, R = Placement(True), Placement(False)


def test_a_plain_module_without_a_process_group_is_plain_data_parallel():
    assert detect_layout(torch.nn.Linear(2, 2)) == Layout()


def test_hsdp_mesh_replicate_shard_gives_dp_rank_and_shard():
    mesh = Mesh(("replicate", "shard"), (2, 4), [1, 3])
    assert layout_from_mesh(mesh, (R, S)) == Layout(dp_rank=1, shard=3)


def test_named_tp_pp_ep_dims_win_over_placements():
    mesh = Mesh(("pp", "dp_shard", "ep", "tp"), (2, 2, 2, 4), [1, 0, 1, 3])
    assert layout_from_mesh(mesh, (R, S, S, S)) == Layout(pp_rank=1, shard=0, ep_rank=1,
                                                          tp_rank=3)


def test_several_shard_dims_are_flattened_row_major():
    mesh = Mesh(("dp_shard", "cp"), (4, 2), [3, 1])
    assert layout_from_mesh(mesh, (S, S)) == Layout(shard=7)


def test_without_placements_the_conventional_names_decide():
    mesh = Mesh(("dp_replicate", "dp_shard"), (2, 2), [0, 1])
    assert layout_from_mesh(mesh) == Layout(dp_rank=0, shard=1)


def test_fsdp2_one_dim_mesh_is_a_shard_per_rank():
    assert layout_from_mesh(Mesh(("dp",), (8,), [5]), (S,)) == Layout(shard=5)


def test_layout_rejects_negative_coordinates_naming_the_field():
    with pytest.raises(ValueError, match="shard=-1"):
        Layout(shard=-1)
    assert Layout(shard=0).sharded and not Layout(dp_rank=2).sharded
    assert Layout(tp_rank=1).reporter_options()["tp_rank"] == 1
