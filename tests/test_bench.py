"""Smoke test of ``python -m bench``: its smallest run ends and its JSON holds sane figures."""

from __future__ import annotations

import importlib.util
import json
import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

import bench.__main__ as bench_main
import bench.shared as bench_shared
from bench.__main__ import SECTION_NAMES, SHARED_SECTIONS
from bench.hotpath import get_floor, set_floor, set_loop
from bench.measure import percentile
from bench.plot import plot_series
from bench.report import Goal, Section, timed
from bench.settings import settings_note
from bench.throughput import tier1_hit_ratio
from bench.workloads import READ_HEAVY, KeySpace, make_sequence

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the smoke run writes its JSON and, with matplotlib, its plot."""
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def smoke(smoke_dir: Path) -> tuple[dict[str, Any], str]:
    """One smoke run of every section for the tests of this module: (the JSON document, stdout)."""
    folder = smoke_dir
    out = folder / "bench.json"
    plot = ["--plot", str(folder / "bench.png")] if importlib.util.find_spec("matplotlib") else []
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--shared", "--json", str(out), *plot],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stdout


def test_json_has_machine_and_every_section(smoke: tuple[dict[str, Any], str]) -> None:
    document, stdout = smoke
    machine = document["machine"]
    assert machine["cpu_count"] >= 1
    assert {"tierstore", "plyvel", "msgpack", "cachetools", "diskcache"} <= set(machine["libraries"])
    assert set(document["sections"]) == set(SECTION_NAMES)
    for section in document["sections"].values():
        assert f"== {section['title']}" in stdout
    for goal in document["goals"]:
        assert isinstance(goal["met"], bool) and goal["value"] == goal["value"]  # not NaN


def test_section_times_are_measured(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    ran = {name: section for name, section in document["sections"].items() if section["rows"]}  # not skipped
    seconds = {name: section["seconds"] for name, section in ran.items()}
    assert all(value > 0 for value in seconds.values()), seconds
    # read-heavy and write-heavy come from one runner: a total split evenly would give equal times
    assert seconds["read-heavy"] != seconds["write-heavy"]


def test_timed_records_the_wall_time_of_the_build() -> None:
    def build() -> Section:
        time.sleep(0.05)
        return Section("x", "x")

    section = timed(build)
    assert 0.05 <= section.seconds < 1.0


def test_throughput_figures_are_sane(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    for name in ("read-heavy", "read-heavy-5pct", "write-heavy"):
        by_threads = document["sections"][name]["figures"]["by_threads"]
        assert "threads_1" in by_threads
        for systems in by_threads.values():
            assert {"tierstore", "plyvel+msgpack", "cachetools"} <= set(systems)
            for figures in systems.values():
                assert figures["ops_per_s"] > 0
                assert 0 <= figures["p50_us"] <= figures["p99_us"]
                assert 0.0 <= figures["hit_ratio"] <= 1.0
                assert figures["tierstore_speedup"] > 0
            assert systems["tierstore"]["hit_ratio"] == pytest.approx(1.0)  # every key is prefilled
            assert systems["cachetools"]["hit_ratio"] < 1.0  # memory only, 10% of the keys
            assert 0.0 < systems["tierstore"]["tier1_hit_ratio"] < 1.0
            assert "tier1_hit_ratio" not in systems["plyvel+msgpack"]
            if "diskcache" in systems:  # the slowest peer runs the first quarter of each round
                quarter = systems["tierstore"]["latency_samples"] / 4
                assert systems["diskcache"]["latency_samples"] == pytest.approx(quarter, rel=0.1)


def test_small_tier1_scenario(smoke: tuple[dict[str, Any], str]) -> None:
    document, stdout = smoke
    sections = document["sections"]
    small, large = sections["read-heavy-5pct"], sections["read-heavy"]
    assert small["figures"]["memory_fraction"] == 0.05 and large["figures"]["memory_fraction"] == 0.10
    assert "tier 1 = 5% of keys" in small["title"] and "t1 hit ratio" in small["columns"]
    assert any("memory_items=200" in note for note in small["notes"])  # 5% of the smoke run's 4,000 keys
    one_small, one_large = small["figures"]["by_threads"]["threads_1"], large["figures"]["by_threads"]["threads_1"]
    # the same seeded gets through an LRU half the size: fewer tier-1 hits
    assert one_small["tierstore"]["tier1_hit_ratio"] < one_large["tierstore"]["tier1_hit_ratio"]
    goals = [goal for goal in document["goals"] if goal["section"] == "read-heavy-5pct"]
    assert {(goal["op"], goal["target"]) for goal in goals} == {(">=", 1.2)}
    assert len(goals) == len(small["figures"]["by_threads"])  # one per thread count
    assert stdout.index("== read-heavy:") < stdout.index("== read-heavy-5pct:") < stdout.index("== write-heavy:")


def test_tier1_hit_ratio_counts_every_get() -> None:
    before = {"hits_memory": 10, "hits_disk": 5, "misses": 1, "negative_hits": 0, "sets": 9}
    after = {"hits_memory": 40, "hits_disk": 15, "misses": 6, "negative_hits": 5, "sets": 99}
    assert tier1_hit_ratio(before, after) == pytest.approx(30 / (30 + 10 + 5 + 5))
    assert tier1_hit_ratio(before, before) == 0.0


def test_hotpath_ratios_are_positive(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    section = document["sections"]["hotpath"]
    figures = section["figures"]
    floors = {"tier-1 hit get", "tier-2 hit get", "set", "set(version=)"}
    assert set(figures) == floors | {"tier-2 hit get vs diskcache get", "set vs diskcache set"}
    assert figures["set"]["compared_with"] == "DB.put + packb"
    assert figures["set(version=)"]["compared_with"] == "DB.get + put + packb"
    for name, case in figures.items():
        assert case["ratio"] > 0 and case["ours_ns_per_op"] > 0 and case["theirs_ns_per_op"] > 0
        per_op = case["theirs_ns_per_op"] / case["ours_ns_per_op"]
        if name in floors:
            assert case["ratio_of"] == "ours / theirs"
            per_op = 1 / per_op
        else:
            assert case["ratio_of"] == "theirs / ours"
        assert 0.5 < case["ratio"] / per_op < 2  # the median of ratios points the way the label says
    peer_set = figures["set vs diskcache set"]
    assert peer_set["their_ops_per_loop"] == peer_set["ops_per_loop"] // 8  # diskcache's slow set, fewer calls
    assert figures["set"]["their_ops_per_loop"] == figures["set"]["ops_per_loop"]
    goals = {goal["name"]: (goal["op"], goal["target"]) for goal in document["goals"] if goal["section"] == "hotpath"}
    assert goals == {
        "tier-1 hit get / LRUCache.get": ("<=", 1.0),
        "tier-2 hit get / DB.get + unpackb": ("<=", 2.0),
        "set / DB.put + packb": ("<=", 1.5),
        "set(version=) / DB.get + put + packb": ("<=", 1.5),
        "diskcache get / tierstore tier-2 hit get": (">=", 4.0),
        "diskcache set / tierstore set": (">=", 10.0),
    }


class _CountingDB:
    """A stand-in for plyvel.DB that counts what a floor asks of it."""

    def __init__(self) -> None:
        self.gets: list[bytes] = []
        self.puts: list[tuple[bytes, bytes]] = []

    def get(self, key: bytes) -> bytes:
        self.gets.append(key)
        return msgpack.packb({"stored": True})

    def put(self, key: bytes, value: bytes) -> None:
        self.puts.append((key, value))


def test_set_floors_do_exactly_the_work_of_their_call() -> None:
    keys = [b"a", b"b", b"c"]
    value = {"id": 1}
    plain = _CountingDB()
    assert set_floor(plain, keys, value, versioned=False)() > 0
    assert plain.gets == []  # an unversioned set reads nothing
    assert plain.puts == [(key, msgpack.packb(value)) for key in keys]
    stamped = _CountingDB()
    set_floor(stamped, keys, value, versioned=True)()
    assert stamped.gets == keys  # a versioned set reads the stored version first
    assert stamped.puts == [(key, msgpack.packb(value)) for key in keys]
    reads = _CountingDB()
    get_floor(reads, keys)()
    assert reads.gets == keys and reads.puts == []


def test_versioned_set_loop_stamps_rising_versions() -> None:
    calls: list[tuple[bytes, Any, Any]] = []

    def put(key: bytes, value: Any, version: Any = None) -> None:
        calls.append((key, value, version))

    loop = set_loop(put, [b"a", b"b"], 1, versioned=True)
    loop()
    loop()
    assert [version for _, _, version in calls] == [1, 2, 3, 4]
    calls.clear()
    set_loop(put, [b"a", b"b"], 1, versioned=False)()
    assert calls == [(b"a", 1, None), (b"b", 1, None)]


def test_scenarios_count_source_calls(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    stampede = document["sections"]["stampede"]["figures"]
    naive = stampede["naive get + set"]
    assert naive["source_calls"] >= 20  # at least one load per hot key per wave
    assert naive["reads"] > 0
    if "get_or_load" in stampede:
        assert stampede["get_or_load"]["source_calls"] > 0
    penetration = document["sections"]["penetration"]["figures"]
    naive_p = penetration["naive get_entry + set(ABSENT)"]
    assert naive_p["absent_source_calls"] == naive_p["absent_lookups"] > 0  # distinct absent keys all reach it
    if "get_or_load, guard=True" in penetration:
        guarded = penetration["get_or_load, guard=True"]
        assert guarded["absent_source_calls"] < naive_p["absent_source_calls"]


def test_skips_are_reported_as_such(smoke: tuple[dict[str, Any], str]) -> None:
    document, stdout = smoke
    for entry in document["skipped"]:
        assert "skipped:" in entry and "not available" in entry
        assert entry.split(": ", 1)[1] in stdout


def test_sequences_are_seeded_and_skewed() -> None:
    space = KeySpace(2_000, 0.99, seed=7)
    first = make_sequence(space, READ_HEAVY, 5_000, seed=1)
    again = make_sequence(KeySpace(2_000, 0.99, seed=7), READ_HEAVY, 5_000, seed=1)
    assert first.keys == again.keys and first.values == again.values
    hottest = {space.names[i] for i in space.by_rank[:200]}
    assert sum(key in hottest for key in first.keys) > 0.5 * len(first)
    sets = sum(value is not None for value in first.values)
    assert 0.02 * len(first) < sets < 0.09 * len(first)
    parts = first.split(4)
    assert sum(len(part) for part in parts) == len(first)


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    random.Random(3).shuffle(values)
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.99) == 0.0


def test_unknown_section_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2  # usage errors exit 2, as argparse's own do
    assert "unknown section" in done.stderr


def test_a_json_file_in_a_missing_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "bench.json"
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", "counters", "--json", str(target)])
    assert raised.value.code == 2
    out = capsys.readouterr()
    assert "--json: no directory" in out.err and "counters" not in out.out  # refused before any section ran


@pytest.mark.parametrize("only", [",", " ", ", ,"])
def test_an_only_naming_no_section_is_a_usage_error(capsys: pytest.CaptureFixture[str], only: str) -> None:
    """It ran nothing and exited 0 with "goals: all 0 met", as if a run had passed."""
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", only])
    assert raised.value.code == 2
    assert "--only names no section" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_an_output_file_that_is_a_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str
) -> None:
    """Found only when writing, after the whole run, it was an IsADirectoryError traceback (exit 1)."""
    if flag == "--plot" and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("--plot needs matplotlib")
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", "counters,read-heavy", flag, str(tmp_path)])
    assert raised.value.code == 2
    out = capsys.readouterr()
    assert f"{flag}: {tmp_path} is a directory" in out.err and "counters" not in out.out  # refused before the run


@pytest.mark.parametrize(
    ("threads", "message"),
    [("x", "not an integer"), ("0", "positive"), (",", "positive"), ("1,99999999999", "at most 256")],
)
def test_bad_thread_counts_are_a_usage_error(capsys: pytest.CaptureFixture[str], threads: str, message: str) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", "counters", "--threads", threads])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--threads" in err and message in err and "Traceback" not in err


def test_settings_note_names_only_what_differs_from_the_defaults() -> None:
    note = settings_note({"memory_items": 10_000, "sweep_interval": None, "bloom_error_rate": 0.01, "guard": True})
    assert "sweep_interval=None" in note and "guard=True" in note
    assert "memory_items" not in note and "bloom_error_rate" not in note  # the defaults
    assert settings_note({"checkpoint_interval": 60.0}) == "tierstore: tierstore's default settings"
    assert "memory_items=2,000" in settings_note({"memory_items": 2_000})
    kept = settings_note({"memory_items": 10_000, "sweep_interval": None}, keep=("memory_items",))
    assert kept.startswith("tierstore: memory_items=10,000 (the default), sweep_interval=None")


def test_every_section_prints_the_settings_it_changed(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    sections = document["sections"]
    for name in ("read-heavy", "read-heavy-5pct", "write-heavy", "counters", "pagination", "checkpoint"):
        assert any("sweep_interval=None" in note for note in sections[name]["notes"]), name
    assert any("memory_items=400" in note for note in sections["read-heavy"]["notes"])  # 10% of the smoke keys
    stampede = sections["stampede"]["notes"]
    assert any("min_refresh_interval=0" in note for note in stampede)  # not in any variant's name
    assert any("clock=FakeClock" in note for note in stampede)


def test_sweep_section_times_sweeps_that_remove_nothing(smoke: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke
    section = document["sections"]["sweep"]
    sizes = section["figures"]
    assert [size["entries"] for size in sizes.values()] == [1_000, 5_000]  # the smoke profile
    for size in sizes.values():
        assert size["removed"] == 0  # every entry is live
        assert len(size["times_ms"]) == 3 and size["min_ms"] <= size["median_ms"] <= size["max_ms"]
        assert size["median_ms"] > 0 and size["fill_s"] > 0
    goals = [goal for goal in document["goals"] if goal["section"] == "sweep"]
    assert [(goal["name"], goal["op"], goal["target"]) for goal in goals] == [
        ("sweep() of 5,000 live entries", "<=", 50.0)
    ]
    assert goals[0]["value"] == sizes["5000"]["median_ms"]


def _forced(goal: Goal) -> Any:
    """A runner standing in for every section: one section whose one goal is ``goal``."""

    def runner(config: Any, parent: str, wanted: set[str]) -> list[Section]:
        section = Section("counters", "forced", goals=[goal])
        section.seconds = 0.001
        return [section]

    return lambda: [(("counters",), runner)]


@pytest.mark.parametrize("check", [False, True])
def test_a_missed_goal_is_summed_up_and_fails_only_check(
    check: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_main, "_runners", _forced(Goal("forced figure", 3.0, "<=", 1.5)))
    code = bench_main.main(["--smoke", "--only", "counters"] + (["--check"] if check else []))
    assert code == (1 if check else 0)
    out = capsys.readouterr().out
    assert "== goals: 0 of 1 met, 1 missed" in out
    assert "  missed  counters: forced figure: 3.00x (goal <= 1.50x)" in out


def test_check_passes_when_every_goal_is_met(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_main, "_runners", _forced(Goal("forced figure", 1.0, "<=", 1.5)))
    assert bench_main.main(["--smoke", "--only", "counters", "--check"]) == 0
    out = capsys.readouterr().out
    assert "== goals: all 1 met" in out and "missed" not in out


def test_summary_lists_exactly_the_missed_goals(smoke: tuple[dict[str, Any], str]) -> None:
    document, stdout = smoke
    summary = stdout[stdout.index("== goals:") :]
    missed = [goal for goal in document["goals"] if not goal["met"]]
    assert summary.count("  missed  ") == len(missed)
    for goal in missed:
        assert f"  missed  {goal['section']}: {goal['name']}: " in summary


def test_a_crashed_section_fails_the_run_without_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(config: Any, parent: str, wanted: set[str]) -> list[Section]:
        raise RuntimeError("boom")

    monkeypatch.setattr(bench_main, "_runners", lambda: [(("counters",), crash)])
    assert bench_main.main(["--smoke", "--only", "counters"]) == 1
    assert "failed: RuntimeError: boom" in capsys.readouterr().out


def test_plot_is_a_png_of_the_throughput_sections(smoke: tuple[dict[str, Any], str], smoke_dir: Path) -> None:
    pytest.importorskip("matplotlib")
    data = (smoke_dir / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 800  # two panels, at least five groups of bars


def test_plot_without_matplotlib_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    target = tmp_path / "bench.png"
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", "read-heavy", "--plot", str(target)])
    assert raised.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not target.exists()


def test_plot_needs_a_throughput_section(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--only", "counters", "--plot", str(tmp_path / "bench.png")])
    assert raised.value.code == 2
    assert "--only leaves none" in capsys.readouterr().err


def test_plot_series_has_a_bar_per_system_and_group() -> None:
    def throughput(name: str, threads: dict[str, dict[str, dict[str, float]]]) -> Section:
        return Section(name, name, figures={"by_threads": threads})

    one = {"tierstore": {"ops_per_s": 10.0, "p99_us": 2.0}, "plyvel+msgpack": {"ops_per_s": 20.0, "p99_us": 1.0}}
    sections = [
        throughput("read-heavy", {"threads_1": one, "threads_4": one}),
        Section("counters", "counters", figures={"threads_1": {"incr_per_s": 5.0}}),  # not drawn
        throughput("write-heavy", {"threads_1": {"tierstore": {"ops_per_s": 3.0, "p99_us": 9.0}}}),
    ]
    series = plot_series(sections)
    assert series.groups == ["read-heavy\n1 thread", "read-heavy\n4 threads", "write-heavy\n1 thread"]
    assert series.ops_per_s["tierstore"] == [10.0, 10.0, 3.0]
    assert series.p99_us["plyvel+msgpack"][:2] == [1.0, 1.0]
    assert series.p99_us["plyvel+msgpack"][2] != series.p99_us["plyvel+msgpack"][2]  # NaN: did not run there
    assert "diskcache" not in series.ops_per_s  # ran nowhere: no bars, no legend entry


def _shared(document: dict[str, Any]) -> dict[str, Any]:
    """The shared sections of a run; skips the test when they were skipped (no redis-server here)."""
    sections = {name: document["sections"][name] for name in SHARED_SECTIONS}
    skipped = [skip for section in sections.values() for skip in section["skipped"] if "redis" in skip]
    if skipped:
        pytest.skip(f"the shared sections did not run: {skipped[0]}")
    return sections


def test_shared_throughput_figures_are_consistent(smoke: tuple[dict[str, Any], str]) -> None:
    sections = _shared(smoke[0])
    for name in ("shared-read-heavy", "shared-write-heavy"):
        figures = sections[name]["figures"]
        assert figures["workers"] == 4 and figures["memory_fraction"] == 0.05
        systems = figures["systems"]
        assert {"tierstore", "redis-py+msgpack"} <= set(systems)
        for summary in systems.values():
            assert summary["ops_per_s"] > 0 and 0 <= summary["p50_us"] <= summary["p99_us"]
            assert summary["hit_ratio"] == 1.0  # every key prefilled, none expires: cache-aside never loads
            assert summary["tierstore_speedup"] > 0
        plain, ours = systems["redis-py+msgpack"], systems["tierstore"]
        assert plain["round_trips_per_op"] == pytest.approx(1.0, abs=0.01)  # one GET or one SET per op
        sets = ours["ops"] - ours["gets"]
        assert ours["redis_commands_per_op"]["evalsha"] * ours["ops"] == pytest.approx(sets)  # one script per set
        # its round trips: a script per set, an HMGET per read Redis answered, and the listeners' PINGs
        floor = (sets + ours["redis_reads_per_get"] * ours["gets"]) / ours["ops"]
        assert floor <= ours["round_trips_per_op"] <= floor + 0.05
        assert ours["round_trips_per_op"] < plain["round_trips_per_op"]  # tiers 1 and 2 absorb reads
        for summary in systems.values():
            assert summary["worker_cpu_us_per_op"] > 0 and summary["redis_cpu_us_per_op"] >= 0
        # every round trip is a blocking wait, hence a context switch in the worker that made it
        assert ours["switches_per_op"] > 0 and plain["switches_per_op"] > 0
        assert plain["redis_cpu_us_per_op"] > 0  # Redis served every op of redis-py+msgpack
        assert 0.0 < ours["tier1_hit_ratio"] < 1.0 and ours["invalidations_per_op"] > 0
        if "diskcache" in systems:
            assert systems["diskcache"]["round_trips_per_op"] is None
        for peer, found in figures["coherence"].items():
            assert found["read_the_write"] == found["reads"] == 20 * 4, peer  # every worker read the new values
            assert found["read_the_source_after"] == found["reads"], peer
            assert found["source_mismatches"] == 0, peer
    goals = {goal["name"]: goal["target"] for goal in smoke[0]["goals"] if goal["section"] == "shared-read-heavy"}
    assert goals["tierstore / redis-py+msgpack ops/s"] == 3.0
    if "diskcache" in sections["shared-read-heavy"]["figures"]["systems"]:
        assert goals["tierstore / diskcache ops/s"] == 5.0


def test_shared_lag_is_measured_between_processes(smoke: tuple[dict[str, Any], str]) -> None:
    lag = _shared(smoke[0])["shared-lag"]["figures"]
    assert lag["writes"] == 40 and 0 < lag["seen"] <= 40  # the smoke profile
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"] < 1_000
    streamed = lag["under_stream"]  # a third worker wrote other keys meanwhile
    assert streamed["writes"] == 40 and 0 < streamed["seen"] <= 40 and streamed["stream_writes"] > 0
    assert 0 <= streamed["p50_ms"] <= streamed["p99_ms"] <= streamed["max_ms"] < 1_000
    goals = [goal for goal in smoke[0]["goals"] if goal["section"] == "shared-lag"]
    assert [(goal["op"], goal["target"], goal["value"]) for goal in goals] == [
        ("<=", 5.0, lag["p99_ms"]),
        ("<=", 5.0, streamed["p99_ms"]),
    ]


def test_asyncio_shared_runs_the_scenario_and_prices_each_call_against_its_floor(
    smoke: tuple[dict[str, Any], str],
) -> None:
    section = _shared(smoke[0])["asyncio-shared"]
    figures = section["figures"]
    local, ours = figures["tierstore AsyncTierStore, local"], figures["tierstore AsyncTierStore, shared"]
    assert local["ops"] == ours["ops"] == 100 * 5  # the smoke profile's coroutines x reads
    assert local["round_trips"] == 0  # no Redis
    for run in (local, ours):  # one load per distinct key, across coroutines (and, shared, via the lease)
        assert run["source_calls"] == run["distinct_keys"] > 0 and run["ops_per_s"] > 0
    # a miss takes the HMGET, the lease and the fill; hits take none: between one and a few trips per key
    assert ours["distinct_keys"] <= ours["round_trips"] <= 8 * ours["distinct_keys"]
    assert ours["redis_connections_opened"] >= 1
    costs = figures["per call"]
    trips = {name: case["round_trips_per_call"] for name, case in costs.items()}
    assert trips == {
        "get, key no tier holds": {"AsyncTierStore.get": 1.0, "asyncio.to_thread(TierStore.get)": 1.0},
        "set": {"AsyncTierStore.set": 1.0, "asyncio.to_thread(TierStore.set)": 1.0},
        "get, tier-1 hit": {"AsyncTierStore.get": 0.0},
    }
    assert costs["get, key no tier holds"]["floor"] == "redis.asyncio HMGET"
    assert costs["set"]["floor"] == "redis.asyncio EVALSHA of SET"
    for case in costs.values():
        assert all(ratio > 0 for ratio in case["ratio_to_floor"].values())
        assert all(us > 0 for us in case["us_per_call"].values())
    assert set(costs["set"]["ratio_to_ours"]) == {"asyncio.to_thread(TierStore.set)"}
    assert section["goals"] == []  # no targets yet: the ratios are printed
    assert sum(note.startswith("per call, ") for note in section["notes"]) == len(costs)


def test_round_trips_count_what_the_clients_sent() -> None:
    delta = {"evalsha": 10, "hmget": 5, "ping": 1, "info": 2, "get": 7, "set": 3, "hset": 10}
    assert bench_shared.round_trips(delta, "tierstore", 15) == 16  # its stores' calls and its listeners' PINGs
    assert bench_shared.round_trips(delta, "redis-py+msgpack", 0) == 10  # its GETs and SETs
    assert bench_shared.round_trips(delta, "diskcache", 0) is None


def test_without_redis_server_the_shared_sections_are_skipped_and_the_rest_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_shared, "find_redis_server", lambda: None)
    assert bench_main.main(["--smoke", "--only", "counters,shared-lag"]) == 0
    out = capsys.readouterr().out
    assert "== counters:" in out  # the rest of the bench ran
    assert "skipped: redis-server not available" in out
    assert bench_main.main(["--smoke", "--only", ",".join(SHARED_SECTIONS)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: redis-server not available") == len(SHARED_SECTIONS)


def test_the_default_run_is_the_embedded_store_and_shared_adds_the_shared_sections() -> None:
    _, default = bench_main._parse([])
    assert default == set(SECTION_NAMES) - set(SHARED_SECTIONS)  # no Redis needed, about a minute
    _, everything = bench_main._parse(["--shared"])
    assert everything == set(SECTION_NAMES)
    _, only = bench_main._parse(["--only", "shared-lag"])
    assert only == {"shared-lag"}  # a shared section on its own


def test_shared_and_only_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_main.main(["--smoke", "--shared", "--only", "counters"])
    assert raised.value.code == 2
    assert "--shared" in capsys.readouterr().err


def test_asyncio_runs_the_scenario_on_the_async_store_the_sync_store_and_aiocache(
    smoke: tuple[dict[str, Any], str],
) -> None:
    section = smoke[0]["sections"]["asyncio"]
    figures = section["figures"]
    ours = figures["tierstore AsyncTierStore.get_or_load"]
    threaded = figures["tierstore TierStore.get_or_load in asyncio.to_thread"]
    for run in (ours, threaded):  # single-flight, whether the loads run on the loop or in threads
        assert run["source_calls"] == run["distinct_keys"] > 0
        assert run["ops"] == 100 * 5 and run["ops_per_s"] > 0  # the smoke run: 100 coroutines x 5 reads
    assert figures["AsyncTierStore / to_thread(TierStore) ops/s"] == pytest.approx(
        ours["ops_per_s"] / threaded["ops_per_s"]
    )
    if importlib.util.find_spec("aiocache"):
        assert figures["aiocache SimpleMemoryCache + RedLock"]["source_calls"] == ours["distinct_keys"]
    goals = {goal["name"]: (goal["op"], goal["target"]) for goal in smoke[0]["goals"] if goal["section"] == "asyncio"}
    assert goals == {
        "await get (tier-1 hit) / (get + bare await)": ("<=", 1.5),
        "tierstore source calls / distinct keys": ("==", 1.0),
    }
    assert any("asyncio's default executor" in note for note in section["notes"])
