"""Sections, goals, the table on stdout, the progress line on stderr and the JSON file."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Goal",
    "Section",
    "render",
    "missed_goals",
    "goals_summary",
    "machine_info",
    "write_json",
    "progress",
    "log",
    "timed",
    "fmt",
]

log = logging.getLogger("bench")


def progress(message: str) -> None:
    """One progress line on stderr (long phases announce themselves)."""
    log.info("[bench] %s", message)


@dataclass
class Goal:
    """A measured figure next to the target it should meet."""

    name: str
    value: float
    op: str  # ">=", "<=" or "=="
    target: float
    unit: str = "x"

    @property
    def met(self) -> bool:
        if self.op == ">=":
            return self.value >= self.target
        if self.op == "<=":
            return self.value <= self.target
        return abs(self.value - self.target) < 1e-9

    def figure(self) -> str:
        """``name: figure (goal op target)``."""
        return f"{self.name}: {fmt(self.value)}{self.unit} (goal {self.op} {fmt(self.target)}{self.unit})"

    def describe(self) -> str:
        status = "met" if self.met else f"MISSED ({_miss(self)})"
        return f"{self.figure()} {status}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "target": self.target,
            "unit": self.unit,
            "met": self.met,
        }


def _miss(goal: Goal) -> str:
    if goal.target and goal.op != "==":
        return f"by {abs(goal.value / goal.target - 1) * 100:.0f}%"
    return f"off by {fmt(goal.value - goal.target)}"


@dataclass
class Section:
    """One part of the report: a table, its goals, raw figures for the JSON, notes and skips."""

    name: str
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, feature: str, what: str = "") -> None:
        """Record that a part could not run because ``feature`` is missing from this tree."""
        self.skipped.append(f"skipped: {feature} not available" + (f" ({what})" if what else ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "goals": [goal.as_dict() for goal in self.goals],
            "figures": self.figures,
            "notes": self.notes,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def timed(build: Callable[[], Section]) -> Section:
    """Build one section and record the wall time that took: each section's own time, measured."""
    started = time.perf_counter()
    section = build()
    section.seconds = time.perf_counter() - started
    return section


def fmt(value: Any) -> str:
    """A readable number: thousands separators, about three significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if magnitude else "0"


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [columns] + [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for index, row in enumerate(cells):
        parts = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def render(section: Section) -> str:
    """The section as text a person can read."""
    lines = [f"== {section.title} ({section.seconds:.1f} s)"]
    if section.rows:
        lines.extend(_table(section.columns, section.rows))
    lines.extend(f"  goal  {goal.describe()}" for goal in section.goals)
    lines.extend(f"  note  {note}" for note in section.notes)
    lines.extend(f"  {skip}" for skip in section.skipped)
    return "\n".join(lines) + "\n"


def missed_goals(sections: list[Section]) -> list[tuple[str, Goal]]:
    """Every goal not met, with the name of its section, in report order."""
    return [(section.name, goal) for section in sections for goal in section.goals if not goal.met]


def goals_summary(sections: list[Section]) -> str:
    """The closing lines of a run: how many goals were met, then each missed one with its figure and goal."""
    total = sum(len(section.goals) for section in sections)
    missed = missed_goals(sections)
    if not missed:
        return f"== goals: all {total} met\n"
    lines = [f"== goals: {total - len(missed)} of {total} met, {len(missed)} missed"]
    lines.extend(f"  missed  {name}: {goal.figure()}" for name, goal in missed)
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(versions: dict[str, str]) -> dict[str, Any]:
    """The machine, interpreter and library versions the figures come from."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "libraries": versions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: str, machine: dict[str, Any], config: dict[str, Any], sections: list[Section]) -> None:
    """Every figure, every goal, the machine and the configuration, in one JSON file."""
    document = {
        "machine": machine,
        "config": config,
        "sections": {section.name: section.as_dict() for section in sections},
        "goals": [dict(goal.as_dict(), section=section.name) for section in sections for goal in section.goals],
        "skipped": [f"{section.name}: {skip}" for section in sections for skip in section.skipped],
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=False)
        handle.write("\n")
