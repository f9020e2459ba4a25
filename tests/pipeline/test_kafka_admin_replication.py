"""The replication factor of the topics a worker creates, when it is not told one."""

from __future__ import annotations

from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.kafka_admin import choose_replication_factor
from trainguard.pipeline.store.url import StoreUrl


def cluster(*ids: int, fenced: tuple[int, ...] = ()) -> dict[str, Any]:
    """What ``KafkaAdminClient.describe_cluster()`` returns, brokers only."""
    return {"cluster_id": "c", "controller_id": ids[0] if ids else -1,
            "brokers": [{"broker_id": i, "host": f"kafka-{i}", "port": 9092,
                         "is_fenced": i in fenced} for i in ids]}


def default_rf(value: str, source: str) -> dict[str, Any]:
    """One broker's ``default.replication.factor`` as ``describe_configs`` gives it."""
    return {"default.replication.factor": {"value": value, "read_only": False,
                                           "config_source": source}}


@pytest.mark.parametrize(("brokers", "expected"), [(1, 1), (2, 2), (3, 3), (5, 3)])
def test_without_an_operator_setting_it_is_three_or_every_broker(
    brokers: int, expected: int
) -> None:
    ids = tuple(range(1, brokers + 1))
    assert choose_replication_factor(cluster(*ids), default_rf("1", "DEFAULT_CONFIG")) == expected
    assert choose_replication_factor(cluster(*ids), {}) == expected


@pytest.mark.parametrize("source", ["STATIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG",
                                    "DYNAMIC_BROKER_CONFIG"])
def test_a_default_the_operator_set_wins(source: str) -> None:
    assert choose_replication_factor(cluster(1, 2, 3, 4, 5), default_rf("2", source)) == 2
    assert choose_replication_factor(cluster(1, 2, 3, 4, 5), default_rf("4", source)) == 4


def test_never_more_than_the_live_brokers() -> None:
    two_live = cluster(1, 2, 3, fenced=(3,))
    assert choose_replication_factor(two_live, {}) == 2
    assert choose_replication_factor(two_live, default_rf("3", "STATIC_BROKER_CONFIG")) == 2


def test_a_cluster_that_lists_no_broker_gets_one() -> None:
    assert choose_replication_factor(cluster(), {}) == 1


@pytest.mark.parametrize("factor", [0, 17])
def test_an_explicit_factor_out_of_range_is_refused(factor: int) -> None:
    with pytest.raises(ConfigError, match=f"replication_factor must be within 1..16, got {factor}"):
        WorkerConfig(bootstrap="k:9092", store=StoreUrl.parse("chdb:///tmp/s"),
                     replication_factor=factor)
