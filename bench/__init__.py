"""``python -m bench``: tierstore's throughput and latency against its peers, and its scenario figures.

Run ``python -m bench --help``. Every section is a module: ``throughput``
(read- and write-heavy workloads across systems), ``hotpath`` (per-call ratios
against the raw libraries and diskcache), ``scenarios`` (``stampede``,
``penetration``), ``data`` (counters, pagination), ``durability``
(checkpoints), ``sweeptime`` (sweeps of a large store), ``aio`` (the asyncio
facade), then the shared tier's, which the default run leaves out and
``--shared`` adds: ``shared`` (worker processes on one Redis:
``shared-read-heavy``, ``shared-write-heavy``, ``shared-lag``) and
``aio_shared`` (``asyncio-shared``), with the worker processes
(``shared_worker``), the systems they run (``shared_peers``), the invalidation
lag (``shared_lag``) and the ``redis-server`` it starts (``redis_server``,
which the tests use too). ``plot`` draws the throughput sections for
``--plot``; ``settings`` words the settings notes.
"""
