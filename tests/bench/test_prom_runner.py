"""The scrape config and the file_sd targets of the side-by-side."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.prom_runner import file_sd_groups, prometheus_config
from trainguard.errors import TrainguardError


def test_config_scrapes_the_targets_file_every_second_within_the_interval(
        tmp_path: Path) -> None:
    conf = yaml.safe_load(prometheus_config(tmp_path / "t.json"))
    assert conf["global"]["scrape_interval"] == "1000ms"
    assert conf["global"]["scrape_timeout"] == "1000ms"
    (job,) = conf["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [str(tmp_path / "t.json")]}]


def test_each_node_is_its_own_target_on_its_shards_port() -> None:
    groups = file_sd_groups(5, [9001, 9002], shard=3)
    assert [g["targets"] for g in groups] == [["127.0.0.1:9001"]] * 3 + [["127.0.0.1:9002"]] * 2
    assert groups[4]["labels"] == {"__metrics_path__": "/node/4/metrics",
                                   "instance": "node-00004:9400"}


def test_too_few_shards_for_the_nodes_is_refused() -> None:
    with pytest.raises(TrainguardError, match="2 ports x 3 nodes per shard < 7 nodes"):
        file_sd_groups(7, [9001, 9002], shard=3)
