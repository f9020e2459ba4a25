"""Where the shipped ``infra/`` files are: in the source checkout, or inside the wheel.

The wheel carries ``infra/kafka``, ``infra/alertmanager``, ``infra/grafana`` and
``infra/clickhouse`` as ``trainguard/_infra/…`` (see ``pyproject.toml``); a source checkout
has them at the repository root. Bottom layer: standard library only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["infra_candidates"]

_PACKAGE = Path(__file__).resolve().parent


def infra_candidates(*parts: str) -> tuple[Path, ...]:
    """The places ``infra/<parts…>`` may be, installed wheel first, then the checkout."""
    return (_PACKAGE.joinpath("_infra", *parts), _PACKAGE.parent.joinpath("infra", *parts))
