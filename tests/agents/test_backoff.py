"""Full-jitter backoff: bounded by a doubling ceiling, spread over it, reset by a success."""

import random
import time

import pytest

from trainguard.agents.backoff import JitteredBackoff
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.config_loader import load_agent_config
from trainguard.agents.sender import SpoolSender
from trainguard.agents.spool import Spool
from trainguard.errors import ConfigError


def test_each_delay_lies_under_a_ceiling_that_doubles_up_to_the_cap():
    backoff = JitteredBackoff(0.5, 30.0, rng=random.Random(1))
    ceilings, delays = [], []
    for _ in range(12):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_agents_failing_together_retry_spread_over_the_whole_window():
    # A thousand agents, each with its own generator, after the same five failures.
    delays = []
    for seed in range(1000):
        backoff = JitteredBackoff(0.5, 30.0, rng=random.Random(seed))
        backoff.attempt = 5
        delays.append(backoff.next_delay())
    buckets = [0] * 10
    for d in delays:
        buckets[min(int(d / 16.0 * 10), 9)] += 1
    # Uniform over [0, 16 s]: about 100 per 1.6 s slot, none empty, none a stampede.
    assert all(50 <= n <= 150 for n in buckets), buckets
    assert len({round(d, 3) for d in delays}) > 900


def test_a_success_starts_the_ceiling_again_from_base():
    backoff = JitteredBackoff(0.5, 30.0, rng=random.Random(2))
    for _ in range(8):
        backoff.next_delay()
    assert backoff.ceiling() == 30.0
    backoff.reset()
    assert backoff.attempt == 0 and backoff.ceiling() == 0.5 and backoff.next_delay() <= 0.5


def test_thousands_of_failures_do_not_overflow_the_ceiling():
    backoff = JitteredBackoff(0.5, 30.0, rng=random.Random(3))
    backoff.attempt = 5000
    assert 0 <= backoff.next_delay() <= 30.0


@pytest.mark.parametrize("base, cap", [(0, 1), (2, 1), (-1, 5)])
def test_a_base_outside_zero_to_cap_is_rejected(base, cap):
    with pytest.raises(ConfigError, match="base_s"):
        JitteredBackoff(base, cap)


@pytest.mark.parametrize("base, cap", [(0.001, 1.0), (2.0, 1.0), (1.0, 7200.0)])
def test_producer_settings_reject_a_bad_retry_backoff(base, cap):
    with pytest.raises(ConfigError, match="retry_backoff_s"):
        KafkaProducerSettings(bootstrap="h:1", retry_backoff_s=base, retry_backoff_max_s=cap)


def test_the_backoff_is_read_from_the_agent_config_file(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[kafka]\nbootstrap = "k:9092"\nretry_backoff_s = 0.2\n'
                    'retry_backoff_max_s = 10\n')
    kafka = load_agent_config(path, {}).kafka
    assert (kafka.retry_backoff_s, kafka.retry_backoff_max_s) == (0.2, 10.0)


def test_the_sender_waits_jittered_delays_while_kafka_is_unreachable(tmp_path):
    waits = []

    def wait(delay):
        waits.append(delay)
        if len(waits) > 12:
            time.sleep(0.01)  # enough seen: idle until stop()

    def unreachable(**_settings):
        raise OSError("connection refused")

    spool = Spool(tmp_path / "spool")
    settings = KafkaProducerSettings(bootstrap="h:1", retry_backoff_s=0.25,
                                     retry_backoff_max_s=4.0)
    sender = SpoolSender(spool, settings, producer_factory=unreachable,
                         rng=random.Random(7), wait=wait)
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while len(waits) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sender.stop(drain_timeout=0)
        spool.close()
    expected = JitteredBackoff(0.25, 4.0, rng=random.Random(7))
    assert waits[:12] == [expected.next_delay() for _ in range(12)]
    ceilings = [min(4.0, 0.25 * 2**i) for i in range(12)]
    assert all(0 <= w <= c for w, c in zip(waits[:12], ceilings, strict=True))
    # Jittered, not the plain doubling: the delays fall short of their ceilings.
    assert sum(w < c / 2 for w, c in zip(waits[:12], ceilings, strict=True)) >= 2
    assert sender.errors >= 12
