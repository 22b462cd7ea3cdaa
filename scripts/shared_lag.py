"""How long an invalidation takes to reach another process through the shared tier (Redis).

``python scripts/shared_lag.py unix:///path/to/redis.sock`` (or a ``redis://`` URL)
opens a writer store here and a reader store in a spawned process, both with
``shared=URL``. The writer sets one key to 1, 2, ... ``--writes`` (one every
``--pause`` seconds); the reader polls ``get`` every ``--poll`` seconds and notes
when it first reads each value. Prints p50, p99 and the maximum of the lag from
the writer's ``set`` returning to the reader's first read of the new value
(``time.monotonic``, one clock for both processes on Linux). The reader's copy is
in its tier 1 between writes, so a read that sees the new value first needed the
invalidation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

from tierstore import TierStore


def reader(url: str, namespace: str, writes: int, poll: float, out: Any, ready: Any) -> None:
    seen: dict[int, float] = {}
    with TierStore(shared=url, namespace=namespace) as store:
        ready.set()
        last = None
        deadline = time.monotonic() + 60 + writes * 0.1
        while len(seen) < writes and time.monotonic() < deadline:
            value = store.get("lag")
            if value != last and isinstance(value, int) and value > 0:
                seen.setdefault(value, time.monotonic())
                last = value
            time.sleep(poll)
    out.put(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--namespace", default="tierstore-lag")
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--pause", type=float, default=0.01)
    parser.add_argument("--poll", type=float, default=0.0001)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=reader, args=(args.url, args.namespace, args.writes, args.poll, out, ready))
    process.start()
    ready.wait(60)
    sent: dict[int, float] = {}
    with TierStore(shared=args.url, namespace=args.namespace) as store:
        store.set("lag", 0)
        time.sleep(0.5)
        for value in range(1, args.writes + 1):
            store.set("lag", value)
            sent[value] = time.monotonic()
            time.sleep(args.pause)
    seen = out.get(timeout=120)
    process.join(30)
    lags = sorted(seen[value] - sent[value] for value in seen if value in sent)
    if not lags:
        raise SystemExit("the reader saw no write")
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    summary = f"lag p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {lags[-1] * 1e3:.2f} ms"
    print(f"{len(lags)} of {args.writes} writes seen; {summary}")


if __name__ == "__main__":
    main()
