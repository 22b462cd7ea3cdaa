"""How long an invalidation takes to reach another process through the shared tier, on a Redis of your own.

``python scripts/shared_lag.py unix:///path/to/redis.sock`` (or a ``redis://``
URL) runs the measurement of ``python -m bench --shared``'s ``shared-lag``
section (``bench/shared_lag.py``) against that server: a writer process sets
one key to 1, 2, ... ``--writes`` (``--pause`` seconds apart) through a store
with ``shared=URL``, a reader process polls ``get`` and notes when it first
reads each value. Prints p50, p99 and the maximum of the lag from the
writer's ``set`` returning to the reader's first read of the new value. Both
processes run here, so the lag is one host's (``time.monotonic``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package of this checkout

from bench.shared_lag import measure_lag
from bench.shared_worker import Spec, Workers


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--namespace", default="tierstore-lag")
    parser.add_argument("--writes", type=int, default=1_000)
    parser.add_argument("--pause", type=float, default=0.005)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tierstore-lag-") as directory:
        spec = Spec(
            url=args.url, socket="", namespace=args.namespace, directory=directory, capacity=10_000, keys=1,
            zipf_s=0.99, seed=1, sample_every=8, peers=("tierstore",),
        )  # fmt: skip
        with Workers(spec, 2) as workers:
            lag = measure_lag(workers, args.writes, args.pause)
    print(
        f"{lag['seen']} of {lag['writes']} writes seen; lag p50 {lag['p50_ms']:.2f} ms, "
        f"p99 {lag['p99_ms']:.2f} ms, max {lag['max_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
