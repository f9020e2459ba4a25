"""Thresholds of the cross-rank consistency checks: one frozen, validated object.

Every default is chosen for the telemetry trainguard's agents send (one message per node
per 1 s tick, one step record per rank per optimizer step) and says why next to it.
Steps and samples are counted per rank (or per GPU) and times are event time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from trainguard.errors import ConfigError

__all__ = [
    "HW_SLOWDOWN_BITS",
    "CHECK_VERSION",
    "DEFAULT_MAX_JOBS",
    "ConsistencyConfig",
]

#: Bumped whenever a change to the checks can change what they report.
CHECK_VERSION = "3"

#: NVML clock-event reasons that mean the hardware slowed the GPU down: HW slowdown (0x8),
#: SW thermal (0x20), HW thermal (0x40). Idle (0x1), application clocks (0x2) and the SW
#: power cap (0x4) are the normal life of a GPU and say nothing about a fault.
HW_SLOWDOWN_BITS = 0x8 | 0x20 | 0x40

#: Jobs one worker tracks at once: thousands of concurrent jobs on one cluster is a lot.
DEFAULT_MAX_JOBS = 4096


@dataclass(frozen=True)
class ConsistencyConfig:
    """Every threshold of the consistency stage; validated on construction."""

    # -- step assembly -------------------------------------------------------------------
    #: A step closes this long (event time) after its first record even if ranks are
    #: missing. Agents send once per 1 s tick, so a node's records trail its peers' by up to
    #: a tick plus transport; 3 s covers a missed tick without holding a big job's step long.
    wait_s: float = 3.0
    #: Open steps kept per job; beyond it the oldest is closed as it is. A job stepping
    #: 50 times a second holds ~150 steps open within ``wait_s``.
    max_open_steps: int = 512
    #: Jobs tracked at once; beyond it the least recently seen job (by arrival of its
    #: records) is forgotten, and counted (``evicted_jobs``).
    max_jobs: int = DEFAULT_MAX_JOBS
    #: Step records of a larger world (or a rank past it) are counted as malformed and left
    #: out. The worker dead-letters them at ingest already; per-rank state is held only for
    #: ranks that report, so this bounds nothing but what a rank number may be.
    max_world_size: int = 1 << 20
    #: A job silent this long (event time) is forgotten; as the baselines' ``idle_s``.
    job_idle_s: float = 900.0
    #: Fraction of the world size that must restart (step number going back in their own
    #: event time, or a checkpoint load) before the job enters a new epoch: a lone rank
    #: going back is not a restart of the job.
    restart_quorum: float = 0.5

    # -- reporting -----------------------------------------------------------------------
    #: A culprit leaves a check's findings after this many evaluations (steps, or samples
    #: for GPU checks) in a row without failing it; only then can it be reported anew.
    clear_steps: int = 20
    #: A fault still failing is re-emitted, with the same ``finding_id``, at most this often
    #: (event time), so downstream knows it persists. 0 disables re-emission.
    repeat_s: float = 60.0
    #: Open findings kept per job (a bound; only a job failing everywhere reaches it).
    max_open_findings: int = 4096

    # -- agreement (replicas must be bit-equal) ------------------------------------------
    #: Relative tolerance on the all-reduced grad norm and on the learning rate: both are
    #: the same float on every rank, 1e-6 only forgives a float32 round trip.
    grad_norm_rtol: float = 1e-6
    lr_rtol: float = 1e-6

    # -- peer statistics (robust z against the step's peers) -----------------------------
    #: Fewer ranks than this reporting a metric at a step: no median/MAD verdict on it.
    min_peers: int = 4
    #: Steps over which the peers' relative spread (1.4826 x MAD / median) is smoothed:
    #: the MAD of one step's 8 replicas ranges from a fifth to 1.3x the true spread.
    scale_span: int = 50
    #: local_grad_outlier: |robust z| above this in ``grad_k`` of the last ``grad_n`` steps.
    #: Micro-batch noise gives |z| > 4 once in thousands of rank-steps; 3 of 5 in a row,
    #: practically never.
    grad_z: float = 4.0
    grad_k: int = 3
    grad_n: int = 5
    #: Floor on the scale of local grad norms, relative to the median: ranks agreeing to
    #: within 1 % are never outliers, however tight the rest agree.
    grad_rel_floor: float = 0.01
    #: Floor on the loss scale, relative to the median loss (ranks agreeing to 0.1 %).
    loss_rel_floor: float = 1e-3
    #: loss_outlier and straggler are per-rank CUSUMs calibrated to the job's own noise
    #: (robust.CalibratedCusum). Per step, a rank's robust z against its peers (relative
    #: departure of its loss, or of its compute time from its replica group's median, over
    #: the peers' pooled spread) is clipped at ``peer_z_clip``, standardized by the mean and
    #: variance that clipped z has on the job's own ranks (median over ranks of per-rank
    #: moving moments over ``peer_null_span`` steps, learned from ``peer_warmup`` steps on)
    #: and clipped again; it feeds S = max(0, S + u - k), capped at 2 x the larger h.
    #: loss_outlier watches both sides, straggler only the slow one. One stalled step (2-3x)
    #: adds at most clip - k (2.5 or 2), far below h; a skewed, heavy-tailed job (a CPU job
    #: whose ranks exceed 1.1x the median in 30 % of steps) is standardized by its own
    #: moments. Loss, ARL0 (Siegmund, standardized normal increments, k = 0.5):
    #: (e^(2k(h+1.166)) - 2k(h+1.166) - 1) / (2k^2) = 5.7e7 rank-steps per side at h = 16
    #: (h = 12: 1.0e6, h = 14: 7.7e6); 20 job-hours x 16 ranks at 1 step/s are 1.15e6
    #: rank-steps, so the two-sided loss test expects 0.04 false alarms there (50x margin);
    #: clipping only lengthens ARL0. A shift of 1 noise sigma (3 % loss with 3 % micro-batch noise)
    #: crosses h = 16 in ~32 steps (ARL1), 2 sigmas in ~12.
    peer_z_clip: float = 3.0
    loss_cusum_k: float = 0.5
    #: Step times come in bursts (a busy host slows a rank for a few steps in a row; the
    #: real CPU job had a healthy rank slow in 15 of 20 steps), which a CUSUM tuned for
    #: independent steps adds up: a healthy noisy job (15 % noise, bursts of 1-4 steps up
    #: to 1.6x starting on 6 % of steps; 4 and 16 ranks, 3,000 steps) peaked at 21 with
    #: k = 0.5 and h = 16. The straggler takes k = 1 and h = 20: the same jobs peaked at
    #: 8.7-13.1, while a rank 25 % slower in that noisy job is found in 60-200 steps and a
    #: node 10 % slower at 2 % noise in ~12 (k = 1.5 would peak at 7.6 but miss the 25 %
    #: rank). ARL0 for independent standardized steps at k = 1, h = 20: ~e^(2(21.2)) / 2 >
    #: 1e18 rank-steps; bursts, not the threshold, set the straggler's margin: 25x more
    #: rank-steps than measured (1.2 M) adds ~ln(25) = 3.2 to the peak, still below 20.
    straggler_cusum_k: float = 1.0
    loss_cusum_h: float = 16.0
    straggler_cusum_h: float = 20.0
    peer_warmup: int = 30
    peer_null_span: int = 300
    #: Floor on the null's standard deviation of clipped z: a job whose ranks agree exactly
    #: (all z 0) would otherwise turn the smallest departure into a page.
    peer_sd_floor: float = 0.25
    #: Minimum effect: the rank's relative departure, a moving average over
    #: ``peer_effect_span`` steps, must also exceed these (loss: either side; compute time:
    #: slower). A very tight job crosses h on a 1 % departure; 1.5 % of loss (half the
    #: micro-batch noise of a typical job) and 4 % of compute time are what pages. While
    #: firing, half of h and half of the effect keep the alarm on (hysteresis).
    loss_min_effect: float = 0.015
    straggler_min_effect: float = 0.04
    peer_effect_span: int = 30
    #: Thermal / HW slowdown bits seen on a node's GPUs this recently make its stragglers
    #: (and lost GPUs or XIDs its idle GPUs) "hardware".
    hw_recent_s: float = 60.0

    # -- presence ------------------------------------------------------------------------
    #: rank_missing needs at least this fraction of the world size to have reported.
    missing_quorum: float = 0.5
    #: step_skew: a live rank this many steps behind the job.
    skew_steps: int = 5
    #: job_stalled (info): GPU samples keep coming but no step closed for this long. Longer
    #: than a checkpoint save or an eval phase.
    stall_s: float = 60.0

    # -- rank processes (agents' rank watch, the trainer kit's bye and waiting) ------------
    #: rank_exited: a departure is judged this long (event time) after it, so that the
    #: bye explaining it and the exits of its peers, noticed by agents on other nodes
    #: (they send once per 1 s tick), have arrived; a kill counts as this much earlier.
    exit_grace_s: float = 1.5
    #: rank_exited: every rank of the world leaving with ``bye terminated`` within this
    #: window is a job stop or an elastic restart; a terminated rank whose peers keep
    #: running past it is blamed.
    terminate_window_s: float = 3.0
    #: rank_exited: a rank leaving with ``bye finished`` is benign when every rank of the
    #: world left within this window of it (ranks of a finished job exit within seconds of
    #: each other; a final save on one rank takes longer); one whose peers are still there
    #: after it said it finished, and exited, is blamed.
    finish_window_s: float = 60.0
    #: rank_exited: ranks leaving with ``bye error`` / ``bye terminated`` (or killed by a
    #: launcher's escalation) this long after a blamed exit are its followers.
    follow_s: float = 60.0
    #: rank_hung: a rank's process stopped (SIGSTOP, a debugger) this long.
    hang_stopped_s: float = 2.0
    #: rank_hung: ranks have waited in a collective this long while live ranks of the
    #: world report no wait (the kit reports a wait after 2 s).
    hang_after_s: float = 5.0
    #: Without new rank events, the rank checks of a job run at most this often (event
    #: time): a big job's agents send thousands of batches a second.
    rank_check_every_s: float = 0.25
    #: Ranks one job's event memory tracks before its world size is known (and at least,
    #: after): events for more, or for ranks past the world size, are counted and dropped.
    max_event_ranks: int = 4096
    #: Manifests (by env fingerprint) one job keeps to name the files behind a
    #: ``code_fingerprint`` finding; past it the oldest is forgotten.
    max_manifests: int = 8

    # -- restart continuity (code_changed, restart_divergence) ---------------------------
    #: Steps of a job's own past kept across a restart (job medians of lr, loss, grad
    #: norm: ~80 KB per job). A resume replays the steps since its checkpoint; 2,048 covers
    #: a checkpoint every 2,000 steps, and longer gaps still get the lr jump and level tests.
    history_steps: int = 2048
    #: Data epochs whose seed fingerprints (per replica group) are remembered for a resume.
    history_data_epochs: int = 4
    #: Loss and grad norm are compared over the first this many steps after a resume (the
    #: replayed ones, or past the replay the pre-restart trend extrapolated): 20 steps
    #: of a median over the ranks pin a shift of half the run's step-to-step noise.
    continuity_steps: int = 20
    #: Fewer comparable steps than this after a resume: no verdict on the trajectory.
    continuity_min_steps: int = 5
    #: The run's noise is the robust scale of the step-to-step changes of its last this
    #: many steps before the restart (the spread of one before/after comparison).
    continuity_noise_steps: int = 100
    #: A trajectory departs when its mean clipped z over the window, over its standard
    #: error (sqrt(1/steps), plus the extrapolated trend's own error past a replay),
    #: exceeds this: noise alone stays below 4 (normal tails) even with a heavy tail
    #: clipped at ``continuity_z_clip``...
    continuity_z: float = 6.0
    continuity_z_clip: float = 4.0
    #: ...and when it moved at least this much (relative): a job whose ranks agree very
    #: tightly must not page on a 0.5 % wobble of its loss after a reload.
    continuity_min_effect: float = 0.02
    #: lr at a resume without replayed steps may differ from the last lr before it by at
    #: most this many times the schedule's largest step-to-step change (per step of gap).
    lr_jump_slack: float = 3.0

    # -- agents --------------------------------------------------------------------------
    #: agent_silent: a node whose GPUs run a job and whose agent sent no heartbeat for
    #: this long (event time) pages. Agents heartbeat every 5 s (``heartbeat_interval_s``):
    #: 8 s forgives a heartbeat 3 s late and still pages within 10 s of the agent stopping
    #: (it stopped after its last heartbeat). Keep it above the agents' interval.
    agent_silent_s: float = 8.0
    #: A node not heard for this long (wall clock) is forgotten, and a silence page with
    #: it stops being refreshed (the alert then resolves).
    agent_forget_s: float = 3600.0
    #: Nodes whose heartbeats are tracked at once; past it the least recently heard is
    #: forgotten (counted). 10,000 nodes, with headroom.
    max_nodes: int = 65536

    # -- hand-off between workers --------------------------------------------------------
    #: The most bytes (uncompressed) one input partition's jobs take in a state snapshot,
    #: and the most a snapshot being loaded may inflate to. Jobs past it (least recently
    #: seen first) are left out, counted in ``state_jobs_left_out``, and start fresh on
    #: the worker that takes the partition over. A 64-rank job takes about 100 kB.
    max_state_bytes: int = 64 * 1024 * 1024

    # -- devices -------------------------------------------------------------------------
    #: node_idle: a node (or GPU) below ``idle_pct`` utilization while its peers' median is
    #: above ``busy_pct`` for ``idle_k`` samples in a row. A checkpoint save or an eval
    #: dips every node together, so the median drops and nothing fires.
    idle_pct: float = 25.0
    busy_pct: float = 60.0
    idle_k: int = 5
    #: Peers' samples count for a node's verdict when within this much event time of it
    #: (agents tick every second; 5 s forgives jitter and a missed tick).
    fresh_s: float = 5.0
    #: A GPU whose training process exited (no compute process left) or that fell off the
    #: bus is judged on its first such sample, not after ``idle_k``: a dataloader stall
    #: keeps its process, so nothing benign looks like this. It is judged against its
    #: peers' samples of the same tick (agents sample on wall-clock second boundaries), so
    #: a whole job stopping shows as everyone released, not as one node ahead of the
    #: rest. Peers' samples within ``exit_align_s`` of it count as the same tick...
    exit_align_s: float = 0.5
    #: ...and it waits at most this much of the job's event time for half of them.
    exit_wait_s: float = 2.0
    #: gpu_throttled: thermal / HW slowdown bits on ``throttle_k`` samples in a row.
    throttle_k: int = 5
    #: Checkpoint saves remembered per rank (the loads of the last few matter). A rank's
    #: new save beyond it evicts its oldest only when that is ``checkpoint_keep_s`` old;
    #: otherwise the new one is refused and counted: forged saves with new ids cannot
    #: push a real save out before its restart could load it.
    max_checkpoints: int = 16
    #: A save is kept at least this long (event time). 16 saves per 30 min covers jobs
    #: checkpointing every 2 minutes or less often without refusing any.
    checkpoint_keep_s: float = 1800.0
    #: witness_mismatch: how long (event time) a save waits for the node agent's hash of
    #: its file, and a witnessed file for the save that names its digest. The witness
    #: hashes within a MB/s budget: 300 s covers a 60 GB shard at 200 MB/s.
    witness_wait_s: float = 300.0
    #: Checkpoint files (and code trees) whose digests one job remembers; a new one beyond
    #: it evicts the least recently seen only once that is ``checkpoint_keep_s`` old.
    max_witness_paths: int = 4096

    # -- clocks --------------------------------------------------------------------------
    #: clock_skew: a node's clock (its samples' ts against Kafka's timestamps) more than
    #: this far from its job's other nodes. Below it the same-tick checks' own slack (a
    #: tick of waiting) absorbs the skew; beyond it they realign the node's samples. Above
    #: a simulation's drift between two ticks (< 1 s), so replays never raise it.
    clock_skew_s: float = 2.0
    #: A node's offset is the median of its last ``skew_window`` sample batches, measured
    #: once it has ``skew_min_samples``...
    skew_window: int = 31
    skew_min_samples: int = 5
    #: ...and clock_skew fires after ``skew_k`` batches in a row beyond the bound.
    skew_k: int = 10

    # -- job-wide trajectory (job_shift: the job against its own recent past) ---------
    #: Each aggregate series (median loss, gradient norm, pace, tokens/s; log values) is
    #: fitted with a line over its last ``job_shift_window`` points, ending
    #: ``job_shift_lag`` points back (a shift must not teach the reference before it is
    #: seen; 30 steps is longer than the test needs for a shift of 3 noise units), and
    #: scored once ``job_shift_min_ref`` points are in (100: the extrapolation's own error
    #: is then below 0.4 of the noise, and is added to it).
    job_shift_window: int = 200
    job_shift_lag: int = 30
    job_shift_min_ref: int = 100
    #: CUSUM reference ``k`` and threshold ``h`` in units of the run's own residual noise;
    #: each step adds at most ``job_shift_clip`` units, so no transient shorter than
    #: h / clip = 4 steps (a stall, a stray batch) can fire. False alarms: for Gaussian
    #: noise Siegmund's approximation gives ARL0 = (e^(2k(h+1.166)) - 2k(h+1.166) - 1) /
    #: 2k^2 ~ 4e14 steps per side at k=1, h=16; even a persistent extrapolation bias of half
    #: the noise (k_eff = 0.5) leaves 6e7, and autocorrelated noise (AR(1) 0.3: noise
    #: x1.36) 1.5e8, against 72,000 steps per metric in 20 clean job-hours (6 sides: 4e5).
    #: Measured (``python -m bench.job_shift arl``: one two-sided test, 1 % noise on a
    #: falling loss, 1e6 steps) the learned noise and the extrapolation make alarms ~2-25x
    #: more frequent than that approximation: 300, 14 and 1 per million steps at h = 4, 6
    #: and 8, falling ~15x per 2 units of h, so ~1e-5 per million at h = 16 (0 seen).
    #: A ramped 5 % shift over 60 steps with 1 % noise crosses in ~35 steps.
    job_shift_k: float = 1.0
    job_shift_h: float = 16.0
    job_shift_clip: float = 4.0
    #: Floor on the learned noise (relative): flat or quantized series keep a little.
    job_shift_sigma_floor: float = 0.001
    #: No verdict while the reference is curved: a quadratic term's t-statistic above this.
    #: A loss early in training falls like a power law, which no line extrapolates (tried
    #: on 2 + 10/sqrt(step) with 0.3-3 % noise: without the gate it fired at ~step 145 in
    #: every run). At 2 the gate closes on ~5 % of straight stretches by chance (a small
    #: delay); on power-law and exponential curves (tau 200 to 2,000 steps, 108 runs of
    #: 3,000 steps) one alarm was left, on the steepest (tau = 200 steps, at step 600).
    job_shift_curve_t: float = 2.0
    #: Smallest shift worth a finding, relative (the reference is at least half of it), so
    #: a tight job does not page on a 0.5 % wobble: loss 2 %; gradient norms wander more
    #: (10 %); step time and tokens/s 5 % (a busy shared cluster moves them a little).
    job_shift_loss_effect: float = 0.02
    job_shift_grad_effect: float = 0.1
    job_shift_time_effect: float = 0.05
    #: lr: a step's lr more than this far (relative) from the straight line through the
    #: two steps before (or 10x the schedule's usual departure, if rougher). Linear warmup
    #: and cosine decay depart by < 1 % (at the warmup's end); x1.1 is a jump.
    job_shift_lr_jump: float = 0.1
    #: A shift stays reported this many steps, then its test re-baselines on the new level.
    job_shift_hold_steps: int = 300
    #: After no step for ``job_shift_gap_s`` (and 4x the usual interval: a checkpoint save,
    #: an eval), the first ``job_shift_gap_skip`` steps are left out (often slow).
    job_shift_gap_s: float = 5.0
    job_shift_gap_skip: int = 3
    #: Fewer ranks than this fraction of the world reporting a step: no verdict on it.
    job_shift_quorum: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        _positive(self, "wait_s", "job_idle_s", "stall_s", "fresh_s", "hw_recent_s",
                  "exit_align_s", "exit_wait_s", "clock_skew_s", "witness_wait_s",
                  "agent_silent_s", "agent_forget_s", "exit_grace_s", "terminate_window_s",
                  "follow_s", "finish_window_s", "hang_stopped_s", "hang_after_s",
                  "rank_check_every_s",
                  "grad_z", "peer_z_clip", "loss_cusum_k", "straggler_cusum_k",
                  "loss_cusum_h", "straggler_cusum_h", "peer_sd_floor", "loss_min_effect",
                  "straggler_min_effect")
        _at_least(self, 1, "max_open_steps", "max_jobs", "max_nodes", "max_world_size",
                  "max_state_bytes",
                  "clear_steps",
                  "max_open_findings",
                  "grad_k", "grad_n", "scale_span", "peer_warmup", "peer_null_span",
                  "peer_effect_span", "skew_steps", "idle_k", "throttle_k", "max_checkpoints",
                  "max_witness_paths", "max_event_ranks", "max_manifests",
                  "history_data_epochs", "continuity_steps", "continuity_min_steps",
                  "continuity_noise_steps",
                  "skew_window", "skew_min_samples", "skew_k")
        _at_least(self, 2, "min_peers", "history_steps")
        if self.continuity_min_steps > self.continuity_steps:
            raise ConfigError(
                f"continuity_min_steps ({self.continuity_min_steps}) must be <= "
                f"continuity_steps ({self.continuity_steps})")
        if not 0 < self.continuity_z < self.continuity_z_clip * math.sqrt(
                self.continuity_steps):
            raise ConfigError(
                f"continuity_z must be > 0 and reachable by a clipped mean "
                f"(< continuity_z_clip * sqrt(continuity_steps)), got {self.continuity_z}")
        for name in ("continuity_min_effect", "lr_jump_slack", "continuity_z_clip"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.checkpoint_keep_s < 0:
            raise ConfigError(f"checkpoint_keep_s must be >= 0, got {self.checkpoint_keep_s}")
        if self.repeat_s < 0:
            raise ConfigError(f"repeat_s must be >= 0 (0 disables), got {self.repeat_s}")
        for name in ("grad_norm_rtol", "lr_rtol", "grad_rel_floor", "loss_rel_floor"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("restart_quorum", "missing_quorum"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be within (0, 1], got {getattr(self, name)}")
        # Bit histories are one uint64 per rank.
        for k, n in (("grad_k", "grad_n"),):
            if not getattr(self, k) <= getattr(self, n) <= 64:
                raise ConfigError(
                    f"need {k} <= {n} <= 64, got {k}={getattr(self, k)}, {n}={getattr(self, n)}"
                )
        for h, k in (("loss_cusum_h", "loss_cusum_k"),
                     ("straggler_cusum_h", "straggler_cusum_k")):
            if getattr(self, h) <= self.peer_z_clip - getattr(self, k):
                raise ConfigError(
                    f"{h} ({getattr(self, h)}) must exceed peer_z_clip - {k} "
                    f"({self.peer_z_clip - getattr(self, k)}), or one outlying step could fire"
                )
        if not 0 <= self.idle_pct < self.busy_pct <= 100:
            raise ConfigError(
                "need 0 <= idle_pct < busy_pct <= 100, got "
                f"idle_pct={self.idle_pct}, busy_pct={self.busy_pct}"
            )
        _check_job_shift(self)


def _positive(config: ConsistencyConfig, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(config, name)}")


def _at_least(config: ConsistencyConfig, low: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_job_shift(config: ConsistencyConfig) -> None:
    """The job-wide trajectory section (job_shift)."""
    _positive(config, "job_shift_k", "job_shift_h", "job_shift_clip", "job_shift_sigma_floor",
              "job_shift_curve_t",
              "job_shift_loss_effect", "job_shift_grad_effect", "job_shift_time_effect",
              "job_shift_lr_jump", "job_shift_gap_s")
    _at_least(config, 1, "job_shift_hold_steps")
    _at_least(config, 0, "job_shift_lag", "job_shift_gap_skip")
    _at_least(config, 3, "job_shift_min_ref")
    if config.job_shift_min_ref > config.job_shift_window:
        raise ConfigError(
            f"job_shift_min_ref ({config.job_shift_min_ref}) must be <= job_shift_window "
            f"({config.job_shift_window}), or no test would ever be scored"
        )
    if not 0 < config.job_shift_quorum <= 1:
        raise ConfigError(f"job_shift_quorum must be within (0, 1], got {config.job_shift_quorum}")
