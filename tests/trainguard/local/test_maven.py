"""``kafka fetch`` progress: Maven's output summarized per jar and phase, and a heartbeat."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trainguard.errors import BrokerError
from trainguard.local.broker import fetch_jars
from trainguard.local.maven import FetchProgress

REPO = "https://repo.maven.apache.org/maven2/org/apache/kafka"
POM = f"[INFO] Downloaded from central: {REPO}/kafka-clients/4.4.0/kafka-clients-4.4.0.pom " \
      "(2.1 kB at 10 kB/s)"
JAR = f"[INFO] Downloaded from central: {REPO}/kafka-clients/4.4.0/kafka-clients-4.4.0.jar " \
      "(6.1 MB at 2.3 MB/s)"
PHASE = "[INFO] --- dependency:3.6.1:copy-dependencies (default-cli) @ kafka-broker ---"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def progress(clock: Clock, said: list[str]) -> FetchProgress:
    return FetchProgress(said.append, clock=clock, heartbeat_s=10.0)


def test_each_downloaded_jar_is_one_line_with_its_size_count_and_time(
    progress: FetchProgress, clock: Clock, said: list[str]
) -> None:
    clock.now += 3
    progress.line(f"[INFO] Downloading from central: {REPO}/kafka-clients-4.4.0.jar")
    progress.line(JAR)
    clock.now += 2
    progress.line("[INFO] Downloaded: https://repo1.maven.org/maven2/x/kafka_2.13-4.4.0.jar")

    assert said == ["downloaded kafka-clients-4.4.0.jar (6.1 MB) [1 jar, 3 s]",
                    "downloaded kafka_2.13-4.4.0.jar [2 jars, 5 s]"]


def test_poms_are_counted_not_shown(progress: FetchProgress, said: list[str]) -> None:
    for _ in range(3):
        progress.line(POM)
    assert said == [] and progress.other_files == 3 and progress.jars == 0


def test_a_phase_and_the_first_copy_are_shown_once(
    progress: FetchProgress, said: list[str]
) -> None:
    progress.line(PHASE)
    progress.line("[INFO] Copying kafka-clients-4.4.0.jar to /c/libs/kafka-clients-4.4.0.jar")
    progress.line("[INFO] Copying kafka_2.13-4.4.0.jar to /c/libs/kafka_2.13-4.4.0.jar")
    progress.line("[INFO] BUILD SUCCESS")

    assert said == ["maven dependency:copy-dependencies [0 s]",
                    "copying the jars into the cache [0 s]"]
    assert progress.copied == 2


def test_silence_gets_a_heartbeat_with_the_elapsed_time_every_period(
    progress: FetchProgress, clock: Clock, said: list[str]
) -> None:
    clock.now += 9
    progress.tick()
    assert said == []

    clock.now += 1
    progress.line(POM)  # a pom is no news: it does not put the heartbeat off
    progress.tick()
    clock.now += 5
    progress.tick()
    clock.now += 5
    progress.tick()

    assert said == ["still running after 10 s (0 jars and 1 other files downloaded so far)",
                    "still running after 20 s (0 jars and 1 other files downloaded so far)"]


def test_a_shown_line_puts_the_next_heartbeat_off(
    progress: FetchProgress, clock: Clock, said: list[str]
) -> None:
    clock.now += 8
    progress.line(JAR)
    clock.now += 8
    progress.tick()
    assert said == ["downloaded kafka-clients-4.4.0.jar (6.1 MB) [1 jar, 8 s]"]


# -- fetch_jars with a stand-in for mvn --------------------------------------------------------


def fake_mvn(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "mvn"
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in -DoutputDirectory=*) "
                      "out=\"${a#-DoutputDirectory=}\";; esac; done\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_fetch_jars_reports_maven_progress_and_marks_the_cache(tmp_path: Path) -> None:
    mvn = fake_mvn(tmp_path, f"echo '{POM}'\necho '{JAR}'\necho '{PHASE}'\n"
                             "echo \"[INFO] Copying kafka-clients-4.4.0.jar to $out/k.jar\"\n"
                             "touch \"$out/kafka-clients-4.4.0.jar\"\n"
                             "echo '[INFO] BUILD SUCCESS'\n")
    lines: list[str] = []

    libs = fetch_jars(tmp_path / "cache", mvn=str(mvn), progress=lines.append)

    assert [line.split(" [")[0] for line in lines] == [
        "downloaded kafka-clients-4.4.0.jar (6.1 MB)", "maven dependency:copy-dependencies",
        "copying the jars into the cache"]
    assert (libs / "kafka-clients-4.4.0.jar").is_file()
    assert fetch_jars(tmp_path / "cache", mvn="no-such-mvn") == libs  # cached: Maven not run


def test_a_failed_fetch_names_the_exit_status_and_shows_mavens_last_lines(
    tmp_path: Path,
) -> None:
    mvn = fake_mvn(tmp_path, "echo '[ERROR] Could not resolve dependencies'\nexit 1\n")
    with pytest.raises(BrokerError, match=r"exit 1\):\n.*Could not resolve dependencies"):
        fetch_jars(tmp_path / "cache", mvn=str(mvn), progress=lambda text: None)
