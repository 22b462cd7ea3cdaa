"""``--plot FILE.png``: each throughput scenario's ops/s and p99 latency, per system, as grouped bars.

One PNG with two panels (ops/s above, p99 below), one group of bars per
scenario and thread count, one bar per system; both axes are logarithmic, since
the systems differ by orders of magnitude. matplotlib (Agg backend) is needed
only here: the rest of the bench runs without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .report import Section, fmt
from .systems import SYSTEM_NAMES
from .throughput import SECTIONS as PLOTTED

__all__ = ["PLOTTED", "Series", "plot_series", "matplotlib_missing", "write_plot"]


@dataclass
class Series:
    """What the plot draws: group labels, and per system one value per group (NaN where it did not run)."""

    groups: list[str] = field(default_factory=list)
    ops_per_s: dict[str, list[float]] = field(default_factory=dict)
    p99_us: dict[str, list[float]] = field(default_factory=dict)


def plot_series(sections: list[Section]) -> Series:
    """The bars of the throughput sections among ``sections``, in report order."""
    series = Series()
    for section in sections:
        if section.name not in PLOTTED:
            continue
        for threads_key, systems in section.figures.get("by_threads", {}).items():
            threads = int(threads_key.split("_")[1])
            series.groups.append(f"{section.name}\n{threads} thread{'s' if threads > 1 else ''}")
            for name in SYSTEM_NAMES:
                summary: dict[str, Any] = systems.get(name, {})
                series.ops_per_s.setdefault(name, []).append(summary.get("ops_per_s", math.nan))
                series.p99_us.setdefault(name, []).append(summary.get("p99_us", math.nan))
    for values in (series.ops_per_s, series.p99_us):
        for name in [name for name, figures in values.items() if all(math.isnan(v) for v in figures)]:
            del values[name]  # a system that ran nowhere (diskcache not installed) gets no legend entry
    return series


def matplotlib_missing() -> str | None:
    """Why matplotlib cannot be used, or None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return str(exc) or "matplotlib is not installed"
    return None


def _panel(axes: Any, groups: list[str], values: dict[str, list[float]], label: str) -> None:
    """Grouped bars on a log scale, each labelled with its figure."""
    width = 0.8 / max(1, len(values))
    for index, (name, figures) in enumerate(values.items()):
        shown = [value if value > 0 else math.nan for value in figures]  # log scale: nothing to draw at 0
        positions = [group + (index - (len(values) - 1) / 2) * width for group in range(len(groups))]
        bars = axes.bar(positions, shown, width, label=name)
        axes.bar_label(bars, labels=["" if math.isnan(v) else fmt(v) for v in shown], fontsize=6, rotation=90)
    axes.set_yscale("log")
    axes.set_ylabel(label)
    axes.set_xticks(range(len(groups)), groups, fontsize=8)
    axes.grid(axis="y", which="major", alpha=0.3)
    axes.margins(y=0.2)


def write_plot(path: str, sections: list[Section], title: str) -> None:
    """Draw the throughput sections of ``sections`` into the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    series = plot_series(sections)
    figure = Figure(figsize=(max(8.0, 2.2 * len(series.groups)), 8.0), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    _panel(top, series.groups, series.ops_per_s, "ops/s (higher is better)")
    _panel(bottom, series.groups, series.p99_us, "p99 latency, us (lower is better)")
    top.legend(fontsize=8, ncols=max(1, len(series.ops_per_s)), loc="upper center", bbox_to_anchor=(0.5, 1.2))
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, format="png", dpi=110)
