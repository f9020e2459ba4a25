"""A real 2-process gloo DDP job: comm hook, local vs global grad norm, replicas' digests,
collective numbering and ``waiting`` while a peer is late."""

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from tests.agents.trainer.wire import Receiver
from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard

LATE_STEP, LATE_S = 2, 1.2


def _worker(rank, world, sock, init, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 1))
        model = DistributedDataParallel(net, bucket_cap_mb=0.01)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        sampler = DistributedSampler(list(range(100)), num_replicas=world, rank=rank, seed=4)
        reporter = StepReporter("job-ddp", rank, world, socket_path=sock, node=f"n{rank}")
        guard = TrainGuard.attach(model, opt, reporter=reporter, sampler=sampler,
                                  waiting_after_s=0.3)
        gen = torch.Generator().manual_seed(100 + rank)
        for step in range(4):
            x = torch.randn(16, 32, generator=gen) * (1 + 3 * rank)
            if step == LATE_STEP and rank == 1:
                time.sleep(LATE_S)
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            guard.step(loss)
        if rank == 1:
            with torch.no_grad():
                net[2].weight[5, 5] += 1e-6
        guard.step(0.0)  # step 4: no training; rank 1's tampered weights are hashed
        Path(out, f"{rank}.json").write_text(json.dumps({"sequence": guard.tracer.sequence,
                                                         "errors": guard.errors}))
        guard.close()
    finally:
        dist.destroy_process_group()


def test_ddp_replicas_agree_local_norms_differ_and_a_late_peer_is_waited_for():
    tmp = Path(tempfile.mkdtemp(prefix="tgd", dir="/tmp"))
    receiver = Receiver(tmp / "s.sock")
    try:
        mp.spawn(_worker, args=(2, str(receiver.path), str(tmp / "init"), str(tmp)),
                 nprocs=2, join=True)
        datagrams = receiver.collect(0.2)
        results = {r: json.loads((tmp / f"{r}.json").read_text()) for r in (0, 1)}
    finally:
        receiver.close()
        shutil.rmtree(tmp, ignore_errors=True)
    steps = {(d.step.rank, d.step.step): d.step for d in datagrams if d.step is not None}
    events = [d.event for d in datagrams if d.event is not None]
    assert sorted(steps) == [(r, s) for r in (0, 1) for s in range(5)]
    assert results[0]["errors"] == results[1]["errors"] == 0

    for s in range(4):  # replicas: identical parameters, identical global grad norm
        a, b = steps[0, s], steps[1, s]
        assert a.param_checksum == b.param_checksum and a.checksum_step == s
        assert abs(a.grad_norm - b.grad_norm) <= 1e-5 * a.grad_norm
        # each rank's own gradients before the all-reduce: rank 1's inputs are 4x larger
        assert b.local_grad_norm > 2 * a.local_grad_norm
        assert a.seed_fingerprint == b.seed_fingerprint and a.dp_rank == 0 and b.dp_rank == 1
    assert steps[0, 4].param_checksum != steps[1, 4].param_checksum

    # the late rank's step is compute; its peer's is waiting
    assert steps[1, LATE_STEP].compute_time_s >= LATE_S
    assert steps[0, LATE_STEP].compute_time_s < steps[1, LATE_STEP].compute_time_s
    assert steps[0, LATE_STEP].step_time_s >= LATE_S * 0.9

    # collective numbering agrees across ranks; only the waiting rank says waiting
    assert results[0]["sequence"] == results[1]["sequence"] > 4
    waiting = [e for e in events if e.event == "waiting"]
    assert waiting and {e.rank for e in waiting} == {0}
    assert len({e.collective for e in waiting}) == 1 and {e.step for e in waiting} == {LATE_STEP}
    assert waiting[0].collective < results[0]["sequence"]
    byes = sorted((e.rank, e.reason) for e in events if e.event == "bye")
    assert byes == [(0, "finished"), (1, "finished")]
