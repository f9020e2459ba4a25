"""One panel of a report drawn as a PNG with matplotlib: the blamed line among its peers.

:func:`draw_panel` draws the peers thin and grey (or in colours when no one is blamed),
the blamed line bold red, and the fault's first seen, last seen and resolved times, and
returns a :class:`PanelImage` with the legend and a sentence for the page.
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainguard.grafana.model import Panel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from numpy.typing import NDArray

    from trainguard.report.incident import Incident
    from trainguard.report.query import Series

__all__ = ["MAX_SERIES", "PanelImage", "draw_panel"]

#: More series than this and the peers are drawn as a median and a min-max band: a
#: thousand grey lines are one grey smear that hides the blamed one.
MAX_SERIES = 64
#: 1200 x 450 px: wide enough for a 20-minute window at step resolution, short enough
#: that a page of panels reads without scrolling sideways.
_SIZE_IN, _DPI = (12.0, 4.5), 100
#: Grafana unit ids and what an axis label says for them.
_UNITS = {
    "percent": "%", "percentunit": "%", "watt": "W", "celsius": "°C", "s": "s",
    "ms": "ms", "bytes": "B", "decbytes": "B", "Bps": "B/s", "binBps": "B/s", "hertz": "Hz",
    "rothz": "MHz", "short": "", "none": "",
}
# The fault marks are purple, not orange, so they are not taken for the red blamed line.
_BLAMED, _PEER, _FAULT, _RESOLVED = "#d62728", "#8c8c8c", "#7b3294", "#2ca02c"


@dataclass(frozen=True)
class PanelImage:
    """One drawn panel: where its PNG is, what its legend says, and a sentence about it."""

    title: str
    path: Path
    legend: tuple[str, ...]
    description: str


def draw_panel(
    path: Path, panel: Panel, series: Sequence[Series], incident: Incident,
    *, note: str | None = None,
) -> PanelImage:
    """Draw ``series`` as one PNG at ``path``: peers thin and grey, the blamed line bold.

    Beyond :data:`MAX_SERIES` lines the peers become a median line and a min-max band.
    ``note`` (or "no data") is written across an empty panel.
    """
    # A bare Figure draws with Agg and leaves pyplot's global backend and figure list
    # alone: no display needed on a worker host, nothing to leak in a long-lived process.
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(panel.title, loc="left", fontsize=13, fontweight="bold")
    # An image pasted alone into a ticket must still say which job it shows.
    where = [f"{k} {v}" for k, v in (("job", incident.job_id), ("cluster", incident.cluster))
             if v is not None]
    ax.set_title(" · ".join(where), loc="right", fontsize=9, color="#666")
    # Date axis set up front, so an empty panel gets clock ticks too.
    ax.xaxis_date(tz=UTC)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=5, maxticks=12))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    ax.set_xlim(_dt(incident.start), _dt(incident.end))
    day = datetime.fromtimestamp(incident.start, UTC).strftime("%Y-%m-%d")
    ax.set_xlabel(f"time (UTC, {day})")
    ax.set_ylabel(_ylabel(panel, series))
    if panel.unit == "percentunit":  # Grafana's 0..1 shown as 0..100 %
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.margins(y=0.12)  # head room for the names written at the lines' ends
    description = _draw_lines(ax, series, panel)
    _count_axis(ax, series)
    if not series:
        text = note or f"no data for job {incident.job_id} in this time range"
        ax.text(0.5, 0.5, textwrap.fill(textwrap.shorten(text, 600), 110),
                transform=ax.transAxes, ha="center", va="center", color="#555",
                bbox={"facecolor": "white", "edgecolor": "#ccc", "pad": 8})
        ax.set_yticks([])
        description = text
    _mark_fault(ax, incident)
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        # Wrapped, so one long entry does not squeeze this panel's plot narrower than
        # its neighbours' on the page.
        fig.legend(handles, [textwrap.fill(label, 26) for label in labels],
                   loc="outside right upper", fontsize=9, frameon=False)
    fig.savefig(path, dpi=_DPI)
    return PanelImage(panel.title, path, tuple(labels), f"{panel.title}: {description}")


def _draw_lines(ax: Axes, series: Sequence[Series], panel: Panel) -> str:
    import numpy as np

    blamed = [s for s in series if s.blamed]
    peers = [s for s in series if not s.blamed]
    what = f"{panel.series}s" if panel.series else "series"
    if len(series) > MAX_SERIES and peers:
        times = np.unique(np.concatenate([np.asarray(s.times, float) for s in peers]))
        grid = np.full((len(peers), len(times)), np.nan)
        for i, s in enumerate(peers):
            grid[i, np.searchsorted(times, np.asarray(s.times, float))] = s.values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN instant: a gap
            low, mid, high = (np.nanmin(grid, 0), np.nanmedian(grid, 0), np.nanmax(grid, 0))
        x = _x(times)
        ax.fill_between(x, low, high, color=_PEER, alpha=0.25, linewidth=0,
                        label=f"min–max of {len(peers)} {what}")
        ax.plot(x, mid, color="#555555", linewidth=1.4, label=f"median of {len(peers)} {what}")
        drawn = f"{len(peers)} {what} as median and min–max band"
    else:
        # Without a blamed one to stand out, colour tells the lines apart instead.
        colors = _palette(len(peers)) if not blamed else [_PEER] * len(peers)
        for i, s in enumerate(peers):
            label = s.label if not blamed and len(peers) <= 16 else None
            if blamed and i == 0:
                label = f"peers ({len(peers)} {what})"
            ax.plot(_x(s.times), s.values, color=colors[i],
                    linewidth=0.9 if blamed else 1.2, alpha=0.8, label=label)
        drawn = f"{len(peers)} {what}" + (" in grey" if blamed else "")
        # A colour in a legend of sixteen is hard to match to its line, and a grey peer
        # that strays is worth a name too (the fault may not be where it was blamed).
        for s in _strays(peers):
            _name_at_end(ax, s, "#555555" if blamed else colors[peers.index(s)])
    # Several blamed lines (the ranks of a blamed node) share one colour and one legend
    # entry: four identical red entries would say less than one that names them all.
    names = [s.label for s in blamed[:4]] + ([f"+{len(blamed) - 4} more"] * (len(blamed) > 4))
    for i, s in enumerate(blamed):
        ax.plot(_x(s.times), s.values, color=_BLAMED, linewidth=2.6, zorder=5,
                label=f"{', '.join(names)} (blamed)" if i == 0 else None)
    if len(blamed) == 1:
        _name_at_end(ax, blamed[0], _BLAMED)
    return f"{', '.join(names)} (blamed) drawn in red over {drawn}" if blamed else drawn


def _ylabel(panel: Panel, series: Sequence[Series]) -> str:
    unit = _UNITS.get(panel.unit, panel.unit)
    columns = {s.column for s in series}
    if len(columns) != 1 or not next(iter(columns)):
        return unit or "value"
    name = next(iter(columns))
    if unit:  # "step_time_s" in seconds reads "step time (s)", not "step time s (s)"
        name = re.sub(r"_(s|ms|pct|w|c|bytes)$", "", name)
    name = name.replace("_", " ")
    return f"{name} ({unit})" if unit else name


def _strays(series: Sequence[Series], most: int = 3) -> list[Series]:
    """The lines whose last value sits far from the others' median (at most ``most``)."""
    import numpy as np

    ends = [next((v for v in reversed(s.values) if math.isfinite(v)), math.nan) for s in series]
    finite = np.asarray([v for v in ends if math.isfinite(v)])
    if len(finite) < 4:
        return []
    mid = float(np.median(finite))
    spread = max(float(np.median(np.abs(finite - mid))), 1e-9 * abs(mid), 1e-12)
    far = sorted(((abs(v - mid) / spread, i) for i, v in enumerate(ends) if math.isfinite(v)),
                 reverse=True)
    return [series[i] for score, i in far[:most] if score > 10]


def _name_at_end(ax: Axes, s: Series, color: Any) -> None:
    last = next((i for i in range(len(s.values) - 1, -1, -1) if math.isfinite(s.values[i])), None)
    if last is not None:
        ax.annotate(s.label, (_dt(s.times[last]), s.values[last]), xytext=(-4, 6),
                    textcoords="offset points", ha="right", va="bottom", color=color,
                    fontsize=10, fontweight="bold", zorder=6,
                    # Readable over a thicket of noisy peer lines too.
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})


def _mark_fault(ax: Axes, incident: Incident) -> None:
    if incident.first_seen is None:
        return
    until = incident.resolved_at or incident.last_seen or incident.first_seen
    ax.axvspan(_dt(incident.first_seen), _dt(until), color=_FAULT, alpha=0.08, linewidth=0)
    ax.axvline(_dt(incident.first_seen), color=_FAULT, linewidth=1.5,
               label=f"first seen {_clock(incident.first_seen)}")
    if incident.resolved_at is not None:
        ax.axvline(_dt(incident.resolved_at), color=_RESOLVED, linewidth=1.5, linestyle="--",
                   label=f"resolved {_clock(incident.resolved_at)}")
    elif incident.last_seen is not None and incident.last_seen > incident.first_seen:
        ax.axvline(_dt(incident.last_seen), color=_FAULT, linewidth=1.0, linestyle=":",
                   label=f"last seen {_clock(incident.last_seen)}")


def _palette(n: int) -> list[Any]:
    import matplotlib

    # Qualitative colours while there are enough of them; neighbours in a gradient look alike.
    if n <= 20:
        return [matplotlib.colormaps["tab10" if n <= 10 else "tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def _x(times: Sequence[float] | NDArray[Any]) -> NDArray[Any]:
    """Epoch seconds as datetime64[ms]: matplotlib reads them as UTC, and fast."""
    import numpy as np

    return (np.asarray(times, dtype=float) * 1000).astype("int64").astype("datetime64[ms]")


def _dt(t: float) -> float:
    """Epoch seconds as a matplotlib date number (what axvline and set_xlim take)."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(datetime.fromtimestamp(t, UTC)))


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _count_axis(ax: Any, series: Sequence[Series]) -> None:
    """Counts and flags (0/1, distinct fingerprints) get whole-number ticks from 0.

    Left to itself matplotlib zooms a flat line of 1s into 0.94..1.06, which reads as
    noise; from 0 with integer ticks it reads as "one fingerprint", "differs: yes".
    """
    from matplotlib.ticker import MaxNLocator

    values = [v for s in series for v in s.values if v == v]  # NaN is not equal to itself
    if values and all(float(v).is_integer() and 0 <= v <= 64 for v in values):
        ax.set_ylim(-0.1, max(1.0, max(values)) * 1.15)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
