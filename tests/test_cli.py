"""The ``tierstore`` inspect CLI, run as a real subprocess against real store directories.

Every command runs as ``python -m tierstore`` and, when the project is installed
next to this interpreter (CI installs it), as the ``tierstore`` console script too.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierstore import ABSENT, TierStore
from tierstore._plyvel import plyvel
from tierstore.cli_format import Progress
from tierstore.keyspace import NS_COUNTER, NS_ENTRY, NS_EXPIRY, NS_INDEX_ORDER, NS_META

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = shutil.which("tierstore", path=str(Path(sys.executable).parent))
FORMS = [("module", [sys.executable, "-m", "tierstore"])] + ([("script", [SCRIPT])] if SCRIPT else [])

VALUES: dict[Any, Any] = {
    "user:1": {"name": "ann", "tags": [1, 2], "blob": b"\x00\xff"},
    "user:2": "plain text",
    b"\x00\xfebin": b"\x00\x01\xfe\xff" * 3,
    "nums": [1.5, -2, 2**63 - 1, None, True, float("inf")],
    "dollar": {"$bytes": "not a marker", 7: "int key"},
    "\u00fcn\u00ef": ("tuple", "becomes", "list"),
}
LIVE_KEYS = {*VALUES, "versioned"}
NOT_LIVE = {"old": "expired", "neg": "negative", "gone": "tombstone"}

Run = Callable[..., "subprocess.CompletedProcess[str]"]


def from_json(document: Any) -> Any:
    """Invert the CLI's JSON encoding, as documented in its --help."""
    if isinstance(document, list):
        return [from_json(item) for item in document]
    if isinstance(document, dict):
        if "$bytes" in document:
            return base64.b64decode(document["$bytes"])
        if "$float" in document:
            return float(document["$float"])
        if "$map" in document:
            return {from_json(k): from_json(v) for k, v in document["$map"]}
        return {k: from_json(v) for k, v in document.items()}
    return document


def plain(value: Any) -> Any:
    """A value as the store gives it back (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def records(path: Path) -> list[tuple[bytes, bytes]]:
    db = plyvel.DB(str(path))
    try:
        return list(db.iterator())
    finally:
        db.close()


def fields(text: str) -> dict[str, str]:
    """``label  value`` lines of the human output."""
    pairs = (re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines() if line and line[0] != " ")
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def build_store(path: Path) -> None:
    """Entries in every state, counters, two indexes, the existence filter and write-order records."""
    settings: dict[str, Any] = {"guard": True, "bloom_capacity": 1000, "disk_capacity_bytes": 10**9}
    settings |= {"sweep_interval": None, "negative_ttl": 3600, "tombstone_ttl": 3600}
    with TierStore(str(path), **settings) as store:
        for key, value in VALUES.items():
            store.set(key, value)
        store.set("versioned", "v9", version=9, ttl=3600)
        store.set("neg", ABSENT)
        store.set("gone", "x", version=4)
        store.delete("gone")
        store.incr("visits", 42)
        store.decr(b"\x01", 7)
        store.index("leaders").add_many([("ann", 3), ("bob", 1.5), (b"\x02", -2), ("cy", 10)])
        store.index("built").replace([("a", 1)], stamp="v7")
        store.guard_keys(["in the source"])
    with TierStore(str(path), clock=lambda: time.time() - 10_000, **settings) as store:
        store.set("old", "stale", ttl=60)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store"
    build_store(path)
    return path


@pytest.fixture
def own_store(store: Path, tmp_path: Path) -> Path:
    """A private copy of the populated store, for tests that damage it."""
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    return copy


@pytest.fixture(params=[form for _, form in FORMS], ids=[name for name, _ in FORMS])
def cli(request: pytest.FixtureRequest) -> Run:
    def run(*args: object) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*request.param, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def test_console_script_is_installed_under_ci() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("the console script is checked where CI installs the project (CI=true)")
    assert SCRIPT is not None, f"no tierstore console script next to {sys.executable}"


def test_inspect_human(cli: Run, store: Path) -> None:
    proc = cli("inspect", store)
    assert proc.returncode == 0, proc.stderr
    shown = fields(proc.stdout)
    assert shown["schema"] == "1"
    assert shown["entries"] == "7 live, 1 expired, 1 negative, 1 tombstone"
    assert shown["counters"] == "2"
    assert "'leaders': 4 members, never rebuilt" in proc.stdout
    assert "'built': 1 members, stamp 'v7'" in proc.stdout
    assert " keys of 1,000, " in shown["bloom filter"] and "incomplete" not in shown["bloom filter"]
    assert shown["checkpoint"] == "none"
    assert shown["expiry index"] == "complete"


def test_inspect_json(cli: Run, store: Path) -> None:
    proc = cli("inspect", store, "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["kind"] == "working directory"
    assert document["clean_shutdown"] is True
    entries = document["entries"]
    assert (entries["live"], entries["expired"], entries["negative"], entries["tombstone"]) == (7, 1, 1, 1)
    assert entries["corrupt"] == 0 and entries["bytes"] > 0
    assert document["counters"] == 2
    indexes = {index["name"]: index for index in document["indexes"]}
    assert indexes["leaders"] == {"name": "leaders", "size": 4, "stamp": None, "built": False}
    assert indexes["built"]["stamp"] == "v7"
    bloom = document["bloom"]
    assert bloom["keys"] >= 10 and bloom["capacity"] == 1000 and bloom["complete"] is True
    assert 0 < bloom["estimated_error_rate"] < 0.01 and bloom["nbits"] > 0
    assert document["records"]["entry"]["count"] == 10
    assert document["records"]["write_order"]["count"] >= 1
    assert document["records"]["expiry"]["count"] == 4  # versioned, neg, gone (a tombstone), old
    assert document["expiry_index_complete"] is True
    assert document["disk"]["bytes"] > 0


def test_get_live_entry(cli: Run, store: Path) -> None:
    human = cli("get", store, "versioned")
    assert human.returncode == 0, human.stderr
    shown = fields(human.stdout)
    assert (shown["state"], shown["value"], shown["version"], shown["flags"]) == ("live", "'v9'", "9", "-")
    assert "(in 59m" in shown["expires"]
    document = json.loads(cli("get", store, "versioned", "--json").stdout)
    assert document["live"] is True and document["value"] == "v9" and document["version"] == 9
    assert 3500 < document["remaining"] <= 3600
    assert document["ttl"] == 3600


def test_get_bytes_key_and_binary_value(cli: Run, store: Path) -> None:
    proc = cli("get", store, b"\x00\xfebin".hex(), "--bytes", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert from_json(document["key"]) == b"\x00\xfebin"
    assert from_json(document["value"]) == VALUES[b"\x00\xfebin"]
    assert cli("get", store, b"user:1".hex(), "--bytes").returncode == 1  # b"user:1" is not the key "user:1"


@pytest.mark.parametrize(("key", "reason"), [("missing", "absent"), *NOT_LIVE.items()])
def test_get_says_why_there_is_no_live_entry(cli: Run, store: Path, key: str, reason: str) -> None:
    human = cli("get", store, key)
    assert human.returncode == 1
    assert f"no live entry for {key!r}: {reason}" in human.stderr
    proc = cli("get", store, key, "--json")
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert (document["state"], document["live"]) == (reason, False)


def test_get_usage_errors(cli: Run, store: Path) -> None:
    bad_hex = cli("get", store, "zz", "--bytes")
    assert bad_hex.returncode == 2 and "the key in hex" in bad_hex.stderr
    bad_name = cli("index", store, "zz", "--bytes")
    assert bad_name.returncode == 2 and "the index name in hex" in bad_name.stderr
    too_long = cli("get", store, "k" * 5000)
    assert too_long.returncode == 2 and "limit" in too_long.stderr


def test_scan_human_is_aligned_and_live_only(cli: Run, store: Path) -> None:
    proc = cli("scan", store)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    column = header.index("KEY")
    assert {row[column:] for row in rows} == {repr(key) for key in LIVE_KEYS}
    assert all(row.startswith("live ") for row in rows)
    every = cli("scan", store, "--all").stdout.splitlines()
    states = {line[every[0].index("KEY") :]: line.split()[0] for line in every[1:]}
    assert {states[repr(key)] for key in NOT_LIVE} == set(NOT_LIVE.values())
    assert all(states[repr(key)] == reason for key, reason in NOT_LIVE.items())


def test_scan_selection_and_json(cli: Run, store: Path) -> None:
    lines = cli("scan", store, "--prefix", "user:", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["key"] for row in rows] == ["user:1", "user:2"]
    assert all(row["state"] == "live" and row["size"] > 0 for row in rows)
    by_bytes = [json.loads(line) for line in cli("scan", store, "--prefix", "00", "--bytes", "--json").stdout.split()]
    assert [from_json(row["key"]) for row in by_bytes] == [b"\x00\xfebin"]
    limited = cli("scan", store, "--all", "--limit", "2", "--json")
    assert len(limited.stdout.splitlines()) == 2 and "--limit 2" in limited.stderr
    every = [json.loads(line) for line in cli("scan", store, "--all", "--json").stdout.splitlines()]
    assert {
        row["key"]: row["state"] for row in every if isinstance(row["key"], str) and row["key"] in NOT_LIVE
    } == NOT_LIVE
    gone = next(row for row in every if row["key"] == "gone")
    assert gone["flags"] == ["tombstone"] and gone["version"] == 4


def test_dump_round_trips_bytes_keys_and_binary_values(cli: Run, store: Path) -> None:
    proc = cli("dump", store)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    dumped = {_hashable(from_json(line["key"])): from_json(line["value"]) for line in lines}
    expected = {key: plain(value) for key, value in VALUES.items()} | {"versioned": "v9"}
    assert dumped == expected
    assert json.loads(proc.stdout.splitlines()[0])["key"] == {"$bytes": base64.b64encode(b"\x00\xfebin").decode()}
    assert cli("dump", store, "--json").stdout == proc.stdout


def _hashable(key: Any) -> Any:
    return bytes(key) if isinstance(key, bytearray) else key


def test_help_documents_the_bytes_marker(cli: Run) -> None:
    proc = cli("dump", "--help")
    assert proc.returncode == 0
    assert '{"$bytes": "<base64>"}' in proc.stdout


def test_verify_finds_a_record_corrupted_on_disk(cli: Run, own_store: Path) -> None:
    clean = cli("verify", own_store)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all sound" in clean.stdout
    namespaces = json.loads(cli("verify", own_store, "--json").stdout)["namespaces"]
    assert {"entry", "counter", "index_meta", "index_member", "index_order", "meta", "write_order", "expiry"} <= set(
        namespaces
    )
    assert all(counts["unchecked"] == 0 for counts in namespaces.values())
    db = plyvel.DB(str(own_store))
    db.put(NS_ENTRY + b"sbroken", b"\xc1 garbage")
    db.put(NS_COUNTER + b"shits", b"not a count")
    db.close()
    human = cli("verify", own_store)
    assert human.returncode == 1
    assert repr(NS_ENTRY + b"sbroken") in human.stdout
    assert repr(NS_COUNTER + b"shits") in human.stdout
    assert "2 corrupt" in human.stdout
    document = json.loads(cli("verify", own_store, "--json").stdout)
    corrupt = {from_json(problem["raw_key"]) for problem in document["corrupt"]}
    assert corrupt == {NS_ENTRY + b"sbroken", NS_COUNTER + b"shits"}
    assert document["namespaces"]["entry"]["corrupt"] == 1
    broken = cli("get", own_store, "broken")
    assert broken.returncode == 1 and "corrupt" in broken.stderr
    assert "corrupt" in cli("scan", own_store, "--all", "--prefix", "broken").stdout


def test_hostile_deeply_nested_value_dumps_without_a_traceback(cli: Run, own_store: Path) -> None:
    depth = 600  # past what two Python frames per level allow by default; msgpack decodes up to ~1000
    time_field = b"\xcb" + b"\x3f\xf0" + bytes(6)  # 1.0 as a msgpack float64
    envelope = b"\x99\x01\x00\xc0\x00" + b"\x91" * depth + b"\xc0" + time_field + b"\xc0\x01" + time_field
    db = plyvel.DB(str(own_store))
    db.put(NS_ENTRY + b"sdeep", envelope)
    db.close()
    proc = cli("dump", own_store, "--prefix", "deep")
    assert proc.returncode == 0
    value = json.loads(proc.stdout)["value"]
    for _ in range(depth):
        (value,) = value
    assert value is None


def test_counters(cli: Run, store: Path) -> None:
    human = cli("counters", store)
    assert human.returncode == 0, human.stderr
    header, *rows = human.stdout.splitlines()
    assert [row.split() for row in rows] == [["-7", "b'\\x01'"], ["42", "'visits'"]]
    assert header.index("NAME") == rows[0].index("b'")
    document = json.loads(cli("counters", store, "--json").stdout)
    assert [(from_json(c["name"]), c["count"]) for c in document["counters"]] == [(b"\x01", -7), ("visits", 42)]


def test_index_pages(cli: Run, store: Path) -> None:
    human = cli("index", store, "leaders", "--offset", "1", "--limit", "2")
    assert human.returncode == 0, human.stderr
    title, _, *rows = human.stdout.splitlines()
    assert title == "index 'leaders': 4 members, never rebuilt"
    assert [row.split() for row in rows] == [["1", "1.5", "'bob'"], ["2", "3.0", "'ann'"]]
    document = json.loads(cli("index", store, "leaders", "--json").stdout)
    assert [(i["rank"], from_json(i["member"]), i["score"]) for i in document["items"]] == [
        (0, b"\x02", -2.0),
        (1, "bob", 1.5),
        (2, "ann", 3.0),
        (3, "cy", 10.0),
    ]
    assert json.loads(cli("index", store, "built", "--json").stdout)["stamp"] == "v7"
    missing = cli("index", store, "nope")
    assert missing.returncode == 1 and "no index named 'nope'" in missing.stderr


def test_index_with_a_damaged_member_key_is_a_finding_not_a_traceback(cli: Run, own_store: Path) -> None:
    db = plyvel.DB(str(own_store))
    order_keys = [key for key, _ in db.iterator(prefix=NS_INDEX_ORDER)]
    victim = next(key for key in order_keys if key.endswith(b"sbob"))
    db.put(victim[: -len(b"sbob")] + b"zbob", db.get(victim))  # a member with an unknown key tag
    db.close()
    proc = cli("index", own_store, "leaders")
    assert proc.returncode == 1
    assert "corrupt" in proc.stderr


def test_store_in_use_by_a_live_process(cli: Run, store: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tierstore import TierStore; s = TierStore(sys.argv[1]);"
         " print('ready', flush=True); sys.stdin.read(); s.close()", str(store)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        proc = cli("inspect", store)
        assert proc.returncode == 2
        assert "in use" in proc.stderr and str(store / "LOCK") in proc.stderr
        assert proc.stdout == ""
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    assert cli("inspect", store).returncode == 0


def test_missing_or_foreign_directory_is_exit_2_and_left_alone(cli: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = cli("inspect", missing)
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("scan", empty)
    assert proc.returncode == 2 and "not a tierstore" in proc.stderr
    assert list(empty.iterdir()) == []
    foreign = tmp_path / "foreign"
    db = plyvel.DB(str(foreign), create_if_missing=True)
    db.put(b"k", b"v")
    db.close()
    proc = cli("verify", foreign)
    assert proc.returncode == 2 and "not a tierstore" in proc.stderr
    afile = tmp_path / "file"
    afile.write_text("x")
    assert cli("dump", afile).returncode == 2


def test_newer_schema_is_refused(cli: Run, own_store: Path) -> None:
    db = plyvel.DB(str(own_store))
    db.put(NS_META + b"schema", msgpack.packb(99))
    db.close()
    proc = cli("inspect", own_store)
    assert proc.returncode == 2 and "newer tierstore" in proc.stderr


def test_usage_errors_exit_2(cli: Run, store: Path) -> None:
    assert cli().returncode == 2
    assert cli("frobnicate", store).returncode == 2
    assert cli("scan", store, "--limit", "-1").returncode == 2
    assert cli("inspect").returncode == 2


def test_commands_do_not_change_the_store(cli: Run, own_store: Path) -> None:
    before = records(own_store)
    commands = [
        ("inspect",),
        ("get", "user:1", "--json"),
        ("get", "gone"),
        ("scan", "--all", "--json"),
        ("dump",),
        ("verify", "--json"),
        ("counters",),
        ("index", "leaders", "--json"),
    ]
    for command, *rest in commands:
        assert cli(command, own_store, *rest).returncode in (0, 1)
    assert records(own_store) == before


def test_checkpoint_directory_reads_like_a_working_directory(cli: Run, tmp_path: Path) -> None:
    work, checkpoint = tmp_path / "work", tmp_path / "checkpoint"
    with TierStore(str(work), persist_path=str(checkpoint), checkpoint_interval=None) as store:
        store.set("a", 1)
        store.set(b"\x00", b"\xff")
        store.incr("n", 3)
        store.checkpoint()
    document = json.loads(cli("inspect", checkpoint, "--json").stdout)
    assert document["kind"] == "checkpoint"
    assert document["checkpoint"]["complete"] is True and document["checkpoint"]["number"] >= 1
    assert document["entries"]["live"] == 2 and document["counters"] == 1
    assert "(checkpoint)" in cli("inspect", checkpoint).stdout
    assert json.loads(cli("inspect", work, "--json").stdout)["checkpoint"]["kind"] == "taken at last close"
    assert cli("dump", checkpoint).stdout == cli("dump", work).stdout
    assert cli("verify", checkpoint).returncode == 0
    assert json.loads(cli("get", checkpoint, "a", "--json").stdout)["value"] == 1


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal_after_the_delay() -> None:
    terminal = FakeTerminal()
    progress = Progress("inspecting", stream=terminal, delay=0.0)
    progress.update(4096)
    assert terminal.getvalue() == "\rinspecting: 4,096 records"
    progress.done()
    assert terminal.getvalue().endswith("\r")
    patient = FakeTerminal()
    Progress("inspecting", stream=patient, delay=60.0).update(4096)
    assert patient.getvalue() == ""
    piped = io.StringIO()
    Progress("inspecting", stream=piped, delay=0.0).update(4096)
    assert piped.getvalue() == ""


def test_verify_finds_a_damaged_expiry_index_record_and_scan_shows_only_entries(cli: Run, own_store: Path) -> None:
    def scanned_keys() -> list[Any]:
        lines = cli("scan", own_store, "--all", "--json").stdout.splitlines()
        return [json.loads(line)["key"] for line in lines]

    before = scanned_keys()
    db = plyvel.DB(str(own_store))
    db.put(NS_EXPIRY + b"\x00" * 8 + NS_ENTRY + b"sbroken", b"short")
    db.close()
    assert scanned_keys() == before and len(before) == 10
    document = json.loads(cli("verify", own_store, "--json").stdout)
    assert [from_json(problem["raw_key"]) for problem in document["corrupt"]] == [
        NS_EXPIRY + b"\x00" * 8 + NS_ENTRY + b"sbroken"
    ]
    assert document["namespaces"]["expiry"] == {"records": 5, "corrupt": 1, "unchecked": 0}


def test_inspect_says_whether_the_expiry_index_is_built(cli: Run, own_store: Path, tmp_path: Path) -> None:
    db = plyvel.DB(str(own_store))
    db.delete(NS_META + b"expiry_index")
    db.close()
    assert fields(cli("inspect", own_store).stdout)["expiry index"].startswith("not built: the next open builds it")
    persist = tmp_path / "persist"
    with TierStore(str(tmp_path / "work"), persist_path=str(persist), sweep_interval=None) as store:
        store.set("k", 1, ttl=60)
    assert json.loads(cli("inspect", persist, "--json").stdout)["expiry_index_complete"] is None
    assert fields(cli("inspect", persist).stdout)["expiry index"] == "not kept in a checkpoint (a restore builds it)"
