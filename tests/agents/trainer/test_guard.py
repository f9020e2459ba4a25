"""TrainGuard on a plain single-process job: what each step reports, bye, never raising."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from trainguard.agents.intake import StepIntake
from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import Layout, TrainGuard
from trainguard.agents.trainer.checksum import ParamChecksum
from trainguard.agents.trainer.fingerprints import seed_fingerprint

ROOT = Path(__file__).resolve().parents[3]


def make_job(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return model, opt


def train(guard, model, opt, steps, *, zero_grad_first=True):
    for _ in range(steps):
        x = torch.randn(8, 6)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        if zero_grad_first:
            opt.zero_grad()
        guard.step(loss)
        if not zero_grad_first:
            opt.zero_grad()


def test_each_step_reports_loss_lr_grad_norm_times_checksum_and_fingerprints(receiver, reporter):
    model, opt = make_job()
    sampler = DistributedSampler(list(range(64)), num_replicas=1, rank=0, seed=5)
    sampler.set_epoch(2)
    guard = TrainGuard.attach(model, opt, reporter=reporter, sampler=sampler,
                              tokens_per_step=100)
    grads = []
    for _ in range(3):
        loss = model(torch.randn(8, 6)).pow(2).mean()
        loss.backward()
        grads.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item())
        opt.step()
        opt.zero_grad()
        guard.step(loss)
    digest_now = guard.checksum.hexdigest()
    guard.close()
    steps = receiver.steps()
    assert [s.step for s in steps] == [0, 1, 2]
    last = steps[-1]
    assert last.lr == pytest.approx(0.05)
    assert [s.grad_norm for s in steps] == pytest.approx(grads, rel=1e-5)
    assert last.local_grad_norm is None  # no all-reduce, no local/global distinction
    assert last.param_checksum == digest_now and last.checksum_step == 2
    assert 0 < last.compute_time_s <= last.step_time_s
    assert last.tokens_per_s == pytest.approx(100 / last.step_time_s)
    assert last.data_epoch == 2
    assert last.seed_fingerprint == seed_fingerprint(5)
    assert last.env_fingerprint == guard.manifest.fingerprint
    manifests = receiver.manifests()
    assert len(manifests) == 1 and manifests[0].fingerprint == guard.manifest.fingerprint
    assert manifests[0].entries == guard.manifest.entries
    assert [(e.event, e.reason, e.step) for e in receiver.events()] == [("bye", "finished", 3)]


def test_steps_and_checkpoints_reach_a_real_intake(sock_dir, tmp_path):
    path = sock_dir / "intake.sock"
    with StepIntake(path) as intake:
        reporter = StepReporter("job-i", 0, 1, socket_path=str(path), node="n1")
        model, opt = make_job()
        with TrainGuard.attach(model, opt, reporter=reporter, data_seed=9) as guard:
            train(guard, model, opt, 2)
            saved = guard.save(model.state_dict(), tmp_path / "ck.pt")
            state = guard.load(tmp_path / "ck.pt")
            model.load_state_dict(state)
        import time
        deadline = time.monotonic() + 5
        while intake.steps_received < 2 or intake.checkpoints_received < 2:
            assert time.monotonic() < deadline, intake.counts()
            time.sleep(0.01)
        steps = intake.drain()
        cps = intake.drain_checkpoints()
    assert [s.step for s in steps] == [0, 1]
    assert all(s.param_checksum and s.seed_fingerprint == seed_fingerprint(9) for s in steps)
    assert [(c.action, c.digest, c.step) for c in cps] == [("save", saved, 2), ("load", saved, 2)]
    file = tmp_path / "ck.pt"
    assert saved == hashlib.sha256(file.read_bytes()).hexdigest()
    assert cps[0].path == str(file.absolute()) and cps[0].checkpoint_id == str(file.absolute())


def test_checksum_every_n_steps_and_a_tampered_weight_changes_the_next_digest(receiver, reporter):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter, checksum_every=2)
    train(guard, model, opt, 2)
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-6
    tampered = ParamChecksum(model.parameters()).hexdigest()
    guard.step(None)  # step 2: no training, the tampered weights are what it hashes
    guard.close()
    steps = receiver.steps()
    assert [s.checksum_step for s in steps] == [0, None, 2]
    assert steps[2].param_checksum == tampered != steps[0].param_checksum


def test_step_never_raises_and_counts_failures(receiver, reporter, caplog):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter)
    guard.step("not a loss")
    guard.step(object())
    assert guard.errors == 2
    assert sum("trainguard step failed" in r.message for r in caplog.records) == 1
    guard.step(1.5)
    guard.close()
    assert [s.loss for s in receiver.steps()] == [1.5]


def test_step_index_is_settable_and_explicit_steps_win(receiver, reporter):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter, start_step=10)
    guard.step(1.0)
    guard.step_index = 50
    guard.step(1.0)
    guard.step(1.0, step=7)
    guard.close()
    assert [s.step for s in receiver.steps()] == [10, 50, 7]


def test_an_exception_in_the_with_block_says_bye_error(receiver, reporter):
    model, opt = make_job()
    with pytest.raises(ZeroDivisionError), TrainGuard.attach(model, opt, reporter=reporter):
        1 / 0  # noqa: B018
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "error")]


def test_close_is_idempotent_and_restores_the_excepthook(receiver, reporter):
    hook = sys.excepthook
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter)
    assert sys.excepthook is not hook
    guard.close()
    guard.close()
    assert sys.excepthook is hook
    assert len(receiver.events()) == 1


def test_an_explicit_layout_goes_on_the_wire(receiver, reporter):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter,
                              layout=Layout(tp_rank=1, pp_rank=0, shard=3, ep_rank=2, dp_rank=4))
    guard.step(1.0)
    guard.close()
    s = receiver.steps()[0]
    assert (s.tp_rank, s.pp_rank, s.shard, s.ep_rank, s.dp_rank) == (1, 0, 3, 2, 4)
    assert s.grad_norm is None  # a shard's norm is not the model's


# The exit paths run in a child process; it uses ExitHooks (what TrainGuard installs at
# attach) without torch so that each child starts in well under a second.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from trainguard.agents.reporter import StepReporter
    from trainguard.agents.trainer.exits import ExitHooks
    mode = sys.argv[1]
    if mode == "user-handler":
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    rep = StepReporter("job-x", 0, 1, socket_path=os.environ["SOCK"], node="n")
    sent = []
    def bye(reason):
        if not sent:
            sent.append(reason)
            rep.event("bye", reason=reason, step=1)
    ExitHooks(bye).install()
    assert "torch" not in sys.modules
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "exit":
        sys.exit(0)
    print("ready", flush=True)
    time.sleep(60)
""")


def run_script(sock, mode, *, term=False):
    env = {**os.environ, "SOCK": str(sock), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if term:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_an_uncaught_exception_says_bye_error_and_still_prints_the_traceback(receiver):
    code, err = run_script(receiver.path, "raise")
    assert code == 1 and "RuntimeError: boom" in err
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "error")]


def test_an_uncaught_keyboard_interrupt_says_bye_terminated(receiver):
    code, _ = run_script(receiver.path, "interrupt")
    assert code != 0
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "terminated")]


def test_leaving_without_close_says_bye_finished_at_exit(receiver):
    code, _ = run_script(receiver.path, "exit")
    assert code == 0
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "finished")]


def test_sigterm_says_bye_terminated_and_the_process_still_dies_of_it(receiver):
    code, _ = run_script(receiver.path, "sleep", term=True)
    assert code == -signal.SIGTERM
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "terminated")]


def test_a_user_sigterm_handler_is_left_alone(receiver):
    code, _ = run_script(receiver.path, "user-handler", term=True)
    assert code == 3
    # the user's handler exits through sys.exit: a normal exit, bye finished at exit
    assert [(e.event, e.reason) for e in receiver.events()] == [("bye", "finished")]


def test_attach_installs_the_exit_hooks_and_close_removes_them(receiver, reporter):
    term = signal.getsignal(signal.SIGTERM)
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter)
    assert signal.getsignal(signal.SIGTERM) != term and guard._exits.installed
    guard.close()
    assert signal.getsignal(signal.SIGTERM) == term and not guard._exits.installed


def test_a_changed_manifest_is_sent_again_and_later_steps_carry_its_fingerprint(
        receiver, reporter, tmp_path, monkeypatch):
    (tmp_path / "jobmod_kit.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import jobmod_kit  # noqa: F401

    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter, code_roots=[tmp_path])
    first = guard.manifest.fingerprint
    assert "job:jobmod_kit.py" in guard.manifest.entries
    guard.step(1.0)
    assert not guard.refresh_manifest()
    (tmp_path / "jobmod_kit.py").write_text("X = 2\n")
    assert guard.refresh_manifest()
    guard.step(1.0)
    guard.close()
    sys.modules.pop("jobmod_kit", None)
    assert [m.fingerprint for m in receiver.manifests()] == [first, guard.manifest.fingerprint]
    assert [s.env_fingerprint for s in receiver.steps()] == [first, guard.manifest.fingerprint]


def test_attach_without_an_optimizer_reports_steps_without_lr(receiver, reporter):
    model, _ = make_job()
    guard = TrainGuard.attach(model, None, reporter=reporter)
    guard.step(2.0)
    guard.close()
    [s] = receiver.steps()
    assert s.loss == 2.0 and s.lr is None and s.param_checksum is not None


def test_a_checkpoint_save_and_load_say_busy_so_waiting_peers_do_not_name_this_rank(
        receiver, reporter, tmp_path):
    model, opt = make_job()
    guard = TrainGuard.attach(model, opt, reporter=reporter, waiting_after_s=0.05)
    train(guard, model, opt, 2)
    guard.save(model.state_dict(), tmp_path / "ckpt.pt")
    model.load_state_dict(guard.load(tmp_path / "ckpt.pt"))
    with guard.busy("eval"):
        pass
    guard.close()
    events = receiver.events()
    busy = [(e.event, e.phase) for e in events if e.event == "busy"]
    # Each phase says busy at its start (a long one repeats it while it lasts).
    assert busy.count(("busy", "checkpoint")) >= 2 and ("busy", "eval") in busy
    assert all(e.since is not None and e.step == 2 for e in events if e.event == "busy")
    assert events[-1].event == "bye"
