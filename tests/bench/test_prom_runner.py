"""The /proc CPU reader, the scrape config and the file_sd targets of the side-by-side."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bench.prom_runner import file_sd_groups, proc_cpu_seconds, prometheus_config
from trainguard.errors import TrainguardError


def _fake_stat(root: Path, pid: int, comm: str, utime: int, stime: int) -> None:
    # Fields after the command name, as proc(5) numbers them from 3: state ppid pgrp session
    # tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) cutime cstime ...
    rest = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0",
            str(utime), str(stime), "777", "888", "20", "0", "12", "0", "100"]
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


def test_cpu_is_utime_plus_stime_over_clock_ticks_ignoring_children(tmp_path: Path) -> None:
    _fake_stat(tmp_path, 4242, "prometheus", utime=1234, stime=66)
    assert proc_cpu_seconds(4242, proc=tmp_path, clk_tck=100) == pytest.approx(13.0)


def test_cpu_reader_survives_spaces_and_parentheses_in_the_command_name(
        tmp_path: Path) -> None:
    _fake_stat(tmp_path, 7, "evil ) 1 2 (name", utime=50, stime=50)
    assert proc_cpu_seconds(7, proc=tmp_path, clk_tck=100) == pytest.approx(1.0)


def test_cpu_of_this_process_grows_while_it_works() -> None:
    before = proc_cpu_seconds(os.getpid())
    x = 0
    while proc_cpu_seconds(os.getpid()) <= before:  # bounded: CPU time must advance
        x = sum(range(100_000)) + x
    assert proc_cpu_seconds(os.getpid()) > before


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
