"""The raw topics' aiokafka consumer is built from the worker config (no broker needed)."""

from __future__ import annotations

import asyncio

from trainguard.pipeline.app import _raw_kafka_consumer
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.store.url import StoreUrl


def _consumer_settings(config: WorkerConfig) -> tuple[int, str, bool]:
    async def build() -> tuple[int, str, bool]:
        consumer = _raw_kafka_consumer(config)
        # aiokafka keeps its settings on the instance; nothing connects before start().
        return (consumer._max_partition_fetch_bytes, consumer._group_id,
                consumer._enable_auto_commit)
    return asyncio.run(build())


def test_the_raw_consumer_fetches_the_configured_bytes_per_partition() -> None:
    store = StoreUrl.parse("chdb:///tmp/unused")
    fetch, group, auto_commit = _consumer_settings(
        WorkerConfig(bootstrap="127.0.0.1:9", store=store, app_id="a",
                     max_partition_fetch_bytes=3 * 2**20))
    assert (fetch, group, auto_commit) == (3 * 2**20, "a-raw", False)
    default, _, _ = _consumer_settings(WorkerConfig(bootstrap="127.0.0.1:9", store=store))
    assert default == 8 * 2**20 != 1048576  # not aiokafka's own 1 MiB
