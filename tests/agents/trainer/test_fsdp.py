"""FSDP on 2 CPU processes (gloo): FSDP2's layout comes from the DeviceMesh, sharded ranks
are not replicas, HSDP replicas of a shard agree until one is tampered with; FSDP1's comes
from its sharding strategy and process group."""

import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.agents.trainer.wire import Receiver
from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard


def _train(job, mesh, rank, world, sock, tamper_rank=None):
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reporter = StepReporter(job, rank, world, socket_path=sock, node=f"n{rank}")
    guard = TrainGuard.attach(model, opt, reporter=reporter, data_seed=1)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(2):
        model(torch.randn(4, 8, generator=gen)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        guard.step(1.0)
    if rank == tamper_rank:
        with torch.no_grad():
            model[0].weight.to_local()[0, 0] += 1e-3
    guard.step(1.0)
    guard.close()


def _fsdp1(rank, out):
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    from trainguard.agents.trainer.layout import detect_layout

    layouts = {}
    for strategy in (ShardingStrategy.FULL_SHARD, ShardingStrategy.NO_SHARD):
        model = FullyShardedDataParallel(torch.nn.Linear(8, 16), sharding_strategy=strategy,
                                         device_id=torch.device("cpu"))
        layouts[strategy.name] = detect_layout(model)
    Path(out, f"fsdp1-{rank}.txt").write_text(repr(layouts))


def _worker(rank, world, sock, init, out):
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        _train("fsdp2", init_device_mesh("cpu", (world,), mesh_dim_names=("dp",)),
               rank, world, sock)
        _train("hsdp", init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard")),
               rank, world, sock, tamper_rank=1)
        _fsdp1(rank, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_shards_and_hsdp_replicas_report_the_right_coordinates_and_digests():
    tmp = Path(tempfile.mkdtemp(prefix="tgf", dir="/tmp"))
    receiver = Receiver(tmp / "s.sock")
    try:
        mp.spawn(_worker, args=(2, str(receiver.path), str(tmp / "init"), str(tmp)), nprocs=2,
                 join=True)
        steps = {(s.job_id, s.rank, s.step): s for s in receiver.steps()}
        fsdp1 = {r: (tmp / f"fsdp1-{r}.txt").read_text() for r in (0, 1)}
    finally:
        receiver.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert len(steps) == 12
    # FSDP2 over a 1-D mesh: each rank holds its own shard, no replicas, different digests
    for s in range(3):
        a, b = steps["fsdp2", 0, s], steps["fsdp2", 1, s]
        assert (a.shard, b.shard, a.dp_rank, b.dp_rank) == (0, 1, None, None)
        assert a.param_checksum != b.param_checksum
        assert a.grad_norm is None  # a shard's norm is not the model's
    # HSDP (replicate=2, shard=1): both ranks are replicas of shard 0 and agree...
    for s in range(2):
        a, b = steps["hsdp", 0, s], steps["hsdp", 1, s]
        assert (a.shard, b.shard, a.dp_rank, b.dp_rank) == (0, 0, 0, 1)
        assert a.param_checksum == b.param_checksum
    # ...until rank 1's copy of the shard is modified
    assert steps["hsdp", 0, 2].param_checksum != steps["hsdp", 1, 2].param_checksum
    # FSDP1: FULL_SHARD gives each rank its shard, NO_SHARD is plain data parallel
    for r in (0, 1):
        assert f"'FULL_SHARD': Layout(tp_rank=None, pp_rank=None, shard={r}, ep_rank=None, " \
               "dp_rank=None)" in fsdp1[r]
        assert f"'NO_SHARD': Layout(tp_rank=None, pp_rank=None, shard=None, ep_rank=None, " \
               f"dp_rank={r})" in fsdp1[r]
