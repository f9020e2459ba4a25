"""The /metrics server shared by the worker and the agent: its port check and its errors."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from trainguard.errors import ConfigError
from trainguard.metrics_http import check_metrics_port, serve_metrics


def test_a_port_that_is_taken_is_a_config_error_naming_it() -> None:
    first = serve_metrics(CollectorRegistry(), 0, "127.0.0.1")
    try:
        assert first.port > 0  # the port the system chose
        with pytest.raises(ConfigError, match=f"127.0.0.1:{first.port}"):
            serve_metrics(CollectorRegistry(), first.port, "127.0.0.1")
    finally:
        first.close()


@pytest.mark.parametrize("port", [-1, 65536, "9464"])
def test_ports_outside_the_tcp_range_are_refused_by_name(port: object) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port="):
        check_metrics_port("metrics.port", port)  # type: ignore[arg-type]


def test_no_port_and_any_port_are_accepted() -> None:
    check_metrics_port("metrics_port", None)
    check_metrics_port("metrics_port", 0)
