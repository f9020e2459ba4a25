"""``trainguard worker`` flags: parsed into one validated WorkerConfig, defaults the config's."""

from __future__ import annotations

import pytest

from trainguard.cli.main import build_parser
from trainguard.cli.worker import worker_config
from trainguard.errors import ConfigError
from trainguard.pipeline.config import WorkerConfig


def _config(*flags: str) -> WorkerConfig:
    config = worker_config(build_parser().parse_args(["worker", *flags]))
    assert isinstance(config, WorkerConfig)
    return config


def test_the_flags_default_to_the_worker_configs_own_defaults() -> None:
    config = _config()
    default = WorkerConfig(bootstrap="127.0.0.1:9092", store=config.store)
    for name in ("max_future_s", "max_past_s", "max_world_size", "max_baseline_entities",
                 "max_jobs", "batch_max", "batch_within_s", "batch_linger_s", "partitions",
                 "replication_factor", "max_partition_fetch_bytes", "store_merge_nice"):
        assert getattr(config, name) == getattr(default, name), name


def test_the_caps_are_set_by_flags() -> None:
    config = _config("--max-world-size", "4096", "--max-baseline-entities", "1000",
                     "--max-jobs", "16", "--max-future-s", "60")
    assert (config.max_world_size, config.max_baseline_entities, config.max_jobs,
            config.max_future_s) == (4096, 1000, 16, 60.0)


def test_the_caps_are_set_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINGUARD_MAX_JOBS", "7")
    assert _config().max_jobs == 7


def test_batch_lingering_is_a_flag_and_an_environment_variable_within_bounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config("--batch-linger", "0.3").batch_linger_s == 0.3
    monkeypatch.setenv("TRAINGUARD_BATCH_LINGER_S", "0.25")
    assert _config().batch_linger_s == 0.25
    with pytest.raises(ConfigError, match="batch_linger_s"):
        _config("--batch-linger", "-1")


def test_a_cap_below_one_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_jobs"):
        _config("--max-jobs", "0")


def test_the_silence_threshold_is_a_flag_and_an_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config().agent_silent_s == WorkerConfig(
        bootstrap="127.0.0.1:9092", store=_config().store).agent_silent_s == 8.0
    assert _config("--agent-silent-s", "12").agent_silent_s == 12.0
    monkeypatch.setenv("TRAINGUARD_AGENT_SILENT_S", "6")
    assert _config().agent_silent_s == 6.0


def test_the_replication_factor_is_left_to_the_brokers_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRAINGUARD_REPLICATION_FACTOR", raising=False)
    assert _config().replication_factor is None
    assert _config("--replication-factor", "2").replication_factor == 2


def test_the_raw_fetch_size_is_a_flag_and_an_environment_variable_within_bounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config().max_partition_fetch_bytes == 8 * 1024 * 1024
    assert _config("--max-partition-fetch-bytes", "1048576").max_partition_fetch_bytes == 2**20
    monkeypatch.setenv("TRAINGUARD_MAX_PARTITION_FETCH_BYTES", "4194304")
    assert _config().max_partition_fetch_bytes == 4 * 2**20
    for bad in ("1000", str(2**30)):
        with pytest.raises(ConfigError, match="max_partition_fetch_bytes.*got " + bad):
            _config("--max-partition-fetch-bytes", bad)


def test_the_store_merge_nice_is_a_flag_and_an_environment_variable_within_bounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config().store_merge_nice == 19
    assert _config("--store-merge-nice", "0").store_merge_nice == 0
    monkeypatch.setenv("TRAINGUARD_STORE_MERGE_NICE", "10")
    assert _config().store_merge_nice == 10
    for bad in ("-1", "20"):
        with pytest.raises(ConfigError, match="store_merge_nice.*got " + bad):
            _config("--store-merge-nice", bad)
