"""``python -m bench``: tierstore's throughput and latency against its peers, and its scenario figures.

Run ``python -m bench --help``. Every section is a module: ``throughput``
(read- and write-heavy workloads across systems), ``hotpath`` (per-call ratios
against the raw libraries and diskcache), ``scenarios`` (``stampede``,
``penetration``), ``data`` (counters, pagination), ``durability``
(checkpoints) and ``sweeptime`` (sweeps of a large store). ``plot`` draws the
throughput sections for ``--plot``; ``settings`` words the settings notes.
"""
