"""Who is this training process? Job, rank, world size and node from the launcher's environment.

:meth:`StepReporter.from_env() <trainguard.agents.reporter.StepReporter.from_env>` reads
it here, so that a training script reports with one line whatever launched it. Pure: it
reads the mapping it is given (``os.environ`` by default) and nothing else but the host
name.

Precedence, first match wins, field by field:

1. ``TRAINGUARD_JOB_ID`` / ``TRAINGUARD_NODE``: explicit, for launchers not listed here
   and to override a launcher's job id (e.g. a run name that outlives requeues).
2. **torchrun / torchelastic**: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; job id
   ``TORCHELASTIC_RUN_ID`` unless it is torchrun's placeholder ``none``. torchrun comes
   first because it often runs *inside* a SLURM or MPI allocation, where the outer
   launcher's task id is the agent process's, not the training rank's.
3. **SLURM** (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; job id
   ``slurm-<SLURM_JOB_ID>`` plus ``.<SLURM_STEP_ID>`` (two ``srun`` steps of one allocation
   are two jobs); node ``SLURMD_NODENAME``. Under torchrun, the SLURM job id still names
   the job when torchrun was given no ``--rdzv-id``.
4. **MPI**: Open MPI ``OMPI_COMM_WORLD_RANK`` / ``_SIZE`` / ``_LOCAL_RANK``, else PMI
   (MPICH, Intel MPI, Cray) ``PMI_RANK`` / ``PMI_SIZE`` / ``MPI_LOCALRANKID``; job id
   ``PMIX_NAMESPACE`` or Open MPI's ``OMPI_MCA_ess_base_jobid``.

A job that nothing identifies is a :class:`~trainguard.errors.ConfigError` with one line
saying what to set: a reporter that guesses would mix two jobs' ranks in one check.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from trainguard import envvars
from trainguard.errors import ConfigError
from trainguard.schemas.records import NAME_PATTERN

__all__ = ["JobIdentity", "job_identity"]

_NAME = re.compile(NAME_PATTERN)
_NOTHING = (
    f"cannot tell the training job from the environment: set {envvars.JOB_ID} (and RANK, "
    "WORLD_SIZE), or launch with torchrun, srun (SLURM) or mpirun"
)


@dataclass(frozen=True)
class JobIdentity:
    """One training process's place: its job, rank, world size, local rank and node."""

    job_id: str
    rank: int
    world_size: int
    local_rank: int | None
    node: str
    #: Which launcher's variables gave the rank: ``torchrun`` (``RANK``/``WORLD_SIZE``,
    #: also when set by hand), ``slurm`` or ``mpi``.
    launcher: str


def job_identity(environ: Mapping[str, str], hostname: str | None = None) -> JobIdentity:
    """Read the job, rank and node of this process from ``environ`` (see module docstring)."""
    ranks = _torchrun(environ) or _slurm(environ) or _mpi(environ)
    if ranks is None:
        raise ConfigError(_NOTHING if not environ.get(envvars.JOB_ID) else
                          f"{envvars.JOB_ID} is set but no rank is: set RANK and WORLD_SIZE "
                          "too, or launch with torchrun, srun or mpirun")
    launcher, rank, world, local = ranks
    job_id = _job_id(environ, launcher)
    if job_id is None:
        raise ConfigError(f"{_NOTHING} (found {launcher}'s rank {rank} of {world}, no job id)")
    node = environ.get(envvars.NODE) or environ.get("SLURMD_NODENAME") or \
        hostname or socket.gethostname()
    for what, value in (("job id", job_id), ("node", node)):
        if not _NAME.match(value):
            raise ConfigError(f"{what} {value!r} from the environment does not match "
                              f"{NAME_PATTERN}; set {envvars.JOB_ID} / {envvars.NODE}")
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} from {launcher} is not within world size {world}")
    return JobIdentity(job_id, rank, world, local, node, launcher)


def _job_id(environ: Mapping[str, str], launcher: str) -> str | None:
    explicit = environ.get(envvars.JOB_ID)
    if explicit:
        return explicit
    run_id = environ.get("TORCHELASTIC_RUN_ID")
    if launcher == "torchrun" and run_id and run_id != "none":
        return run_id
    slurm = environ.get("SLURM_JOB_ID")
    if slurm:
        step = environ.get("SLURM_STEP_ID")
        # torchrun under sbatch without srun has no step: the allocation is the job.
        return f"slurm-{slurm}.{step}" if step and launcher == "slurm" else f"slurm-{slurm}"
    return environ.get("PMIX_NAMESPACE") or environ.get("OMPI_MCA_ess_base_jobid") or None


_Ranks = tuple[str, int, int, int | None]


def _torchrun(environ: Mapping[str, str]) -> _Ranks | None:
    return _ranks(environ, "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def _slurm(environ: Mapping[str, str]) -> _Ranks | None:
    return _ranks(environ, "slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


def _mpi(environ: Mapping[str, str]) -> _Ranks | None:
    return _ranks(environ, "mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                  "OMPI_COMM_WORLD_LOCAL_RANK") or \
        _ranks(environ, "mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")


def _ranks(environ: Mapping[str, str], launcher: str, rank_var: str, world_var: str,
           local_var: str) -> _Ranks | None:
    """``(launcher, rank, world size, local rank)`` when both rank and world size are set."""
    if rank_var not in environ or world_var not in environ:
        return None
    rank, world = _int(environ, rank_var), _int(environ, world_var)
    local = _int(environ, local_var) if local_var in environ else None
    return launcher, rank, world, local


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
    if number < 0:
        raise ConfigError(f"{name}={value!r} is negative")
    return number
