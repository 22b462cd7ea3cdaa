"""The stampede and penetration scenarios against a simulated slow source (see stampede.py, penetration.py)."""

from __future__ import annotations

import os

from .config import Config
from .penetration import penetration_section
from .report import Section, timed
from .stampede import stampede_section

__all__ = ["run_scenarios", "SECTIONS"]

SECTIONS = ("stampede", "penetration")


def run_scenarios(config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """The stampede and penetration sections (those in ``wanted``)."""
    root = os.path.join(parent, "scenarios")
    os.makedirs(root, exist_ok=True)
    sections = []
    if "stampede" in wanted:
        sections.append(timed(lambda: stampede_section(config, root)))
    if "penetration" in wanted:
        sections.append(timed(lambda: penetration_section(config, root)))
    return sections
