"""The store settings a measured run changes from tierstore's defaults, as a note for its table.

A figure means little without the settings it was taken with, so every section
prints the settings its stores were opened with that are not the defaults.
The defaults are read from tierstore's own ``Options``, so the note stays true
when a default changes; if they cannot be read, every setting passed is shown.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .report import fmt

__all__ = ["store_defaults", "changed_settings", "settings_note"]

_UNKNOWN = object()


def store_defaults() -> dict[str, Any]:
    """Each setting's default, from ``tierstore.options.Options``; empty if that cannot be read."""
    try:
        from tierstore.options import Options
    except ImportError:
        return {}
    if not dataclasses.is_dataclass(Options):
        return {}
    defaults: dict[str, Any] = {}
    for item in dataclasses.fields(Options):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return defaults


def changed_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in ``settings`` whose value is not the store's default (all of them if unknown)."""
    defaults = store_defaults()
    changed = {}
    for name, value in settings.items():
        default = defaults.get(name, _UNKNOWN)
        same = value == default and isinstance(value, bool) is isinstance(default, bool)
        if default is _UNKNOWN or not same:
            changed[name] = value
    return changed


def _show(name: str, value: Any) -> str:
    """``name=value``, with numbers grouped, paths shortened and callables named by their class."""
    if isinstance(value, str) and name.endswith("path"):
        shown = f".../{os.path.basename(value.rstrip(os.sep))}"
    elif callable(value):
        shown = getattr(value, "__qualname__", None) or type(value).__name__
    elif isinstance(value, float):
        shown = fmt(int(value)) if value.is_integer() else repr(value)
    else:
        shown = fmt(value)
    return f"{name}={shown}"


def settings_note(
    settings: Mapping[str, Any],
    what: str = "tierstore",
    rest: str = "every other setting is tierstore's default",
    keep: tuple[str, ...] = (),
) -> str:
    """One note line: the settings of ``what`` that differ from the defaults (``rest``: what the others are).

    The settings named in ``keep`` are shown even at their default (marked so): the figure a section varies.
    """
    changed = changed_settings(settings)
    shown = [
        _show(name, value) if name in changed else f"{_show(name, value)} (the default)"
        for name, value in settings.items()
        if name in changed or name in keep
    ]
    if not shown:
        return f"{what}: tierstore's default settings"
    return f"{what}: {', '.join(shown)} ({rest})"
