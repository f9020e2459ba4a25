"""job_identity / StepReporter.from_env: the job and rank from torchrun, SLURM or MPI."""

from __future__ import annotations

import pytest

from trainguard.agents.job_env import job_identity
from trainguard.agents.reporter import StepReporter
from trainguard.errors import ConfigError

TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
            "TORCHELASTIC_RUN_ID": "llama-run-7", "GROUP_RANK": "1"}
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "3", "SLURM_PROCID": "9", "SLURM_NTASKS": "16",
         "SLURM_LOCALID": "1", "SLURMD_NODENAME": "gpu-017"}
OMPI = {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0", "PMIX_NAMESPACE": "prterun-host-1234@1"}


def test_torchrun_gives_rank_world_local_rank_and_its_run_id() -> None:
    who = job_identity(TORCHRUN, hostname="node-a")
    assert (who.job_id, who.rank, who.world_size, who.local_rank, who.node, who.launcher) == (
        "llama-run-7", 5, 8, 1, "node-a", "torchrun")


def test_srun_gives_the_task_and_names_the_job_step() -> None:
    who = job_identity(SLURM, hostname="ignored")
    assert (who.job_id, who.rank, who.world_size, who.local_rank, who.node) == (
        "slurm-4242.3", 9, 16, 1, "gpu-017")


def test_torchrun_inside_slurm_takes_torchruns_rank_and_the_allocation_as_job() -> None:
    # One srun task per node runs torchrun: SLURM_PROCID is that launcher's, not the rank.
    env = {**SLURM, **TORCHRUN, "TORCHELASTIC_RUN_ID": "none", "SLURM_PROCID": "1"}
    who = job_identity(env, hostname="h")
    assert (who.rank, who.world_size, who.job_id, who.launcher) == (5, 8, "slurm-4242",
                                                                    "torchrun")


def test_open_mpi_and_pmi() -> None:
    who = job_identity(OMPI, hostname="h1")
    assert (who.job_id, who.rank, who.world_size, who.local_rank, who.launcher) == (
        "prterun-host-1234@1", 2, 4, 0, "mpi")
    pmi = {"PMI_RANK": "3", "PMI_SIZE": "6", "MPI_LOCALRANKID": "1", "TRAINGUARD_JOB_ID": "j"}
    assert (job_identity(pmi, hostname="h").rank, job_identity(pmi, hostname="h").local_rank) \
        == (3, 1)


def test_the_explicit_job_and_node_win_over_the_launchers() -> None:
    env = {**SLURM, "TRAINGUARD_JOB_ID": "run-42", "TRAINGUARD_NODE": "rack3-n1"}
    who = job_identity(env, hostname="h")
    assert (who.job_id, who.node, who.rank) == ("run-42", "rack3-n1", 9)


@pytest.mark.parametrize(("env", "says"), [
    ({}, "cannot tell the training job from the environment: set TRAINGUARD_JOB_ID"),
    ({"TRAINGUARD_JOB_ID": "j"}, "no rank is: set RANK and WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "found torchrun's rank 0 of 2, no job id"),
    ({**TORCHRUN, "RANK": "x"}, "RANK='x' is not an integer"),
    ({**TORCHRUN, "RANK": "8"}, "rank 8 from torchrun is not within world size 8"),
    ({**TORCHRUN, "TORCHELASTIC_RUN_ID": "my run"}, "job id 'my run' from the environment"),
])
def test_what_cannot_identify_the_job_is_one_clear_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        job_identity(env, hostname="h")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_step_reporter_from_env_is_the_one_line_integration(tmp_path) -> None:
    env = {**TORCHRUN, "TRAINGUARD_STEPS_SOCKET": str(tmp_path / "steps.sock")}
    with StepReporter.from_env(env, dp_rank=5, node="override") as reporter:
        assert (reporter.job_id, reporter.rank, reporter.world_size, reporter.local_rank) == (
            "llama-run-7", 5, 8, 1)
        assert reporter.node == "override" and reporter.dp_rank == 5
        assert reporter.socket_path == str(tmp_path / "steps.sock")
        reporter.report(1, loss=2.0)  # no agent listening: dropped and counted, never raised
        assert reporter.dropped == 1
