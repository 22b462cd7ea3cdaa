"""``python -m bench``: run the sections, print their tables and the missed goals, optionally write JSON and a plot."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable

from .config import PROFILES, Config
from .report import Section, goals_summary, log, machine_info, missed_goals, progress, render, write_json
from .systems import library_versions

__all__ = ["main", "finish", "SECTION_NAMES", "SHARED_SECTIONS"]

SECTION_NAMES = (
    "read-heavy",
    "read-heavy-5pct",
    "write-heavy",
    "hotpath",
    "stampede",
    "penetration",
    "counters",
    "pagination",
    "checkpoint",
    "sweep",
    "asyncio",
    "shared-read-heavy",
    "shared-write-heavy",
    "shared-lag",
    "asyncio-shared",
)

SHARED_SECTIONS = ("shared-read-heavy", "shared-write-heavy", "shared-lag", "asyncio-shared")
MAX_THREADS = 256  # --threads: more only measures the machine's thread limits (each thread holds a stack)

Runner = Callable[[Config, str, set[str]], list[Section]]


def _runners() -> list[tuple[tuple[str, ...], Runner]]:
    """Each runner with the section names it produces, in run order."""
    from . import aio, aio_shared, data, durability, hotpath, scenarios, shared, sweeptime, throughput

    return [
        (throughput.SECTIONS, throughput.run_throughput),
        (hotpath.SECTIONS, hotpath.run_hotpath),
        (scenarios.SECTIONS, scenarios.run_scenarios),
        (data.SECTIONS, data.run_data),
        (durability.SECTIONS, durability.run_durability),
        (sweeptime.SECTIONS, sweeptime.run_sweep),
        (aio.SECTIONS, aio.run_aio),
        (shared.SECTIONS, shared.run_shared),
        (aio_shared.SECTIONS, aio_shared.run_aio_shared),
    ]


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """The options and the sections to run; usage errors exit 2 before anything runs."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="tierstore against raw plyvel+msgpack, cachetools and diskcache, plus its scenario figures.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes: about 15 s on 2 cores (30 s with --shared)")
    size.add_argument("--smoke", action="store_true", help="the smallest run, for the test suite")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the machine to FILE")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="also run the shared-tier sections: worker processes on a redis-server the bench starts "
        "(skipped with a note when none is found)",
    )
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help=f"run only this section (repeatable or comma-separated): {', '.join(SECTION_NAMES)}",
    )
    parser.add_argument(
        "--threads", metavar="N,N", type=_thread_counts, help="thread counts of the throughput workloads (e.g. 1,4)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when any goal is missed (by default a report: 0)")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw ops/s and p99 of every system per throughput scenario into FILE.png (needs matplotlib)",
    )
    args = parser.parse_args(argv)
    if args.shared and args.only:
        parser.error("--shared adds the shared sections to the default run; --only picks sections itself")
    wanted = set(SECTION_NAMES) if args.shared else _wanted(parser, args.only)
    if args.json:
        _check_folder(parser, "--json", args.json)
    if args.plot:
        _check_plot(parser, args.plot, wanted)
    return args, wanted


def _check_folder(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """An output file's directory must exist before the run, not be found missing after minutes of it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{flag}: no directory {folder} to write {os.path.basename(path)} into")
    if os.path.isdir(path):
        parser.error(f"{flag}: {path} is a directory; name a file to write")


def _check_plot(parser: argparse.ArgumentParser, path: str, wanted: set[str]) -> None:
    """``--plot`` needs matplotlib, a throughput section to draw and a directory to write into."""
    from .plot import PLOTTED, matplotlib_missing

    missing = matplotlib_missing()
    if missing is not None:
        parser.error(f"--plot needs matplotlib ({missing}): pip install matplotlib, or install '.[bench]'")
    if not wanted.intersection(PLOTTED):
        parser.error(f"--plot draws the throughput sections ({', '.join(PLOTTED)}); --only leaves none of them")
    _check_folder(parser, "--plot", path)


def _wanted(parser: argparse.ArgumentParser, only: list[str] | None) -> set[str]:
    """The sections ``--only`` names; without it the embedded sections (the shared ones need ``--shared``)."""
    if not only:
        return set(SECTION_NAMES) - set(SHARED_SECTIONS)
    names = {name.strip() for item in only for name in item.split(",") if name.strip()}
    if not names:  # "--only ," would run nothing and report "all 0 met"
        parser.error(f"--only names no section; choose from {', '.join(SECTION_NAMES)}")
    unknown = names - set(SECTION_NAMES)
    if unknown:  # parser.error: a usage error exits 2, before anything runs
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTION_NAMES)}")
    return names


def _thread_counts(text: str) -> tuple[int, ...]:
    """``--threads N,N``: positive ints (argparse turns the error into a usage error, exit 2)."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer in {text!r}; give positive integers, e.g. 1,4") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"takes positive integers, e.g. 1,4; got {text!r}")
    if max(counts) > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS} threads per run; got {max(counts)}")
    return counts


def _config(args: argparse.Namespace) -> Config:
    config = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.threads:
        from dataclasses import replace

        config = replace(config, threads=args.threads, write_threads=args.threads)
    return config


def _run_one(runner: Runner, names: tuple[str, ...], config: Config, parent: str, wanted: set[str]) -> list[Section]:
    """Run one runner; a crash becomes a failed section rather than ending the bench."""
    started = time.perf_counter()
    try:
        return runner(config, parent, wanted)  # each section carries its own measured time
    except Exception as exc:
        log.exception("section(s) %s failed", ", ".join(names))
        failed = Section("+".join(n for n in names if n in wanted), f"{', '.join(names)}: failed")
        failed.skipped.append(f"failed: {type(exc).__name__}: {exc}")
        failed.seconds = time.perf_counter() - started
        return [failed]


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every section ran (goals missed or not, unless ``--check``), 1 when one crashed."""
    args, wanted = _parse(argv)
    config = _config(args)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    machine = machine_info(library_versions())
    print(
        f"tierstore bench ({config.name}): {machine['cpus_usable']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, load {machine['load_average']}",
        flush=True,
    )
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="tierstore-bench-") as parent:
        print(f"every store and peer keeps its data in a fresh directory under {parent}", flush=True)
        for names, runner in _runners():
            if not wanted.intersection(names):
                continue
            for section in _run_one(runner, names, config, parent, wanted):
                print(render(section), flush=True)
                sections.append(section)
    if args.json:
        write_json(args.json, machine, config.as_dict(), sections)
        progress(f"wrote {args.json}")
    if args.plot:
        from .plot import write_plot

        write_plot(args.plot, sections, f"tierstore bench ({config.name}), {machine['started']}")
        progress(f"wrote {args.plot}")
    return finish(sections, args.check)


def finish(sections: list[Section], check: bool) -> int:
    """Print the goals summary; 1 when a section crashed, or with ``check`` when a goal was missed, else 0."""
    print(goals_summary(sections), end="", flush=True)
    failed = [s.name for s in sections if any(skip.startswith("failed:") for skip in s.skipped)]
    if failed:
        log.error("section(s) failed: %s", ", ".join(failed))
        return 1
    missed = missed_goals(sections)
    if check and missed:
        log.error("--check: %d goal(s) missed", len(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
