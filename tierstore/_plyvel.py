"""The LevelDB binding, chosen in one place: plyvel, or plyvel-next on Python 3.13 and later.

plyvel publishes wheels up to CPython 3.12. plyvel-next is a fork with the same
API under the import name ``plyvel_next``, with wheels for CPython 3.12 to 3.14.
The package depends on one or the other by Python version (environment markers
in ``setup.cfg``); this module imports the one meant for the running interpreter,
or the other one when only that is installed. Every other module, the tests and
the bench take ``plyvel`` from here and never import a binding themselves.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["BINDINGS", "import_binding", "plyvel"]

#: The import names of the bindings, the one this interpreter's dependency installs first.
BINDINGS: tuple[str, ...] = ("plyvel_next", "plyvel") if sys.version_info >= (3, 13) else ("plyvel", "plyvel_next")


def import_binding(names: Sequence[str] = BINDINGS) -> ModuleType:
    """The first of ``names`` that is installed.

    Only a binding that is not there at all is passed over: one that is there but
    fails to load (a missing shared library, say) raises its own error.
    """
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    raise ModuleNotFoundError(
        f"tierstore needs a LevelDB binding: none of {', '.join(names)} is installed"
        " (pip install plyvel, or plyvel-next on Python 3.13 and later)"
    )


plyvel = import_binding()
