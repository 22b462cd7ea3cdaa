"""IndexRefresher: one round of ``keep_fresh``, rebuilding a ``SortedIndex`` when its source stamp moved.

It is a policy over the index's public API (``built``, ``stamp``,
``dirty_stamp``, ``replace``), scheduled by the store; separate from
``ranking`` so the index module holds only the index.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StoreClosed
from .index_codec import Pairs, check_stamp

if TYPE_CHECKING:
    from .ranking import SortedIndex

__all__ = ["IndexRefresher", "DEFAULT_REFRESH_INTERVAL"]

log = logging.getLogger("tierstore")

DEFAULT_REFRESH_INTERVAL = 5.0


class IndexRefresher:
    """One round of ``keep_fresh``: rebuild the index when the source stamp moved.

    The source stamp is ``stamp()`` when given, else the index's dirty stamp; it
    is read before ``rebuild()`` runs, so a change during a rebuild triggers the
    next round. A failing ``stamp()``, ``rebuild()`` or ``replace`` is logged and
    passed to ``on_error``; the old index stays. Rounds never overlap.
    """

    def __init__(
        self,
        index: SortedIndex,
        rebuild: Callable[[], Pairs],
        *,
        stamp: Callable[[], Any] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not callable(rebuild):
            raise TypeError("rebuild must be a callable returning (member, score) pairs")
        if stamp is not None and not callable(stamp):
            raise TypeError("stamp must be a callable returning the source stamp, or None")
        self.index = index
        self._rebuild = rebuild
        self._stamp = stamp
        self._on_error = on_error
        self._running = threading.Lock()

    def __call__(self) -> bool:
        """Run one round; ``True`` if it rebuilt the index."""
        if not self._running.acquire(blocking=False):
            return False
        try:
            return self._round()
        except StoreClosed:
            return False
        except Exception as exc:
            log.error("refreshing index %r failed; the old index stays", self.index.name, exc_info=True)
            if self._on_error is not None:
                self._on_error(exc)
            return False
        finally:
            self._running.release()

    def _round(self) -> bool:
        index = self.index
        source = index.dirty_stamp if self._stamp is None else check_stamp(self._stamp())
        if index.built and index.stamp == source:
            return False
        index.replace(self._rebuild(), stamp=source)
        return True
