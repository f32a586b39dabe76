"""The journal's batched writes: order kept, few writes for many events, nothing lost on exit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator.record.events import HostStarted, RunAborting
from orchestrator.record.journal import Journal
from orchestrator.record.store import file_sink


class CountingSink:
    """A file sink that counts the batches handed to it."""

    def __init__(self, path: Path) -> None:
        self.inner = file_sink(path, fsync=False)
        self.batches = 0

    def write(self, line: bytes) -> None:
        self.write_lines([line])

    def write_lines(self, lines: list[bytes]) -> None:
        self.batches += 1
        self.inner.write_lines(lines)

    def close(self) -> None:
        self.inner.close()


def test_events_from_many_threads_reach_the_file_in_order_in_few_writes(tmp_path: Path) -> None:
    """1,000 events from four threads are in journal.jsonl in the order they were written, in
    fewer batches than events, and the file equals what the journal says it holds."""
    path = tmp_path / "journal.jsonl"
    sink = CountingSink(path)
    journal = Journal(sink)  # type: ignore[arg-type]

    def burst(n: int) -> None:
        for i in range(250):
            journal.write(HostStarted(step=f"t{n}", host="h", attempt=i))

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    on_disk = [json.loads(line) for line in path.read_text().splitlines()]
    assert on_disk == journal.events
    assert len(on_disk) == 1000
    for n in range(4):
        assert [e["attempt"] for e in on_disk if e["step"] == f"t{n}"] == list(range(250))
    assert sink.batches < 1000


def test_an_event_reaches_the_file_without_close(tmp_path: Path) -> None:
    """A written event is in the file soon after, while the journal stays open (what another
    process, or a controller killed later, sees)."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(file_sink(path, fsync=False))
    journal.write(RunAborting(step="a"))
    deadline = time.monotonic() + 5.0
    while '"run_aborting"' not in path.read_text():
        assert time.monotonic() < deadline, "the event never reached the file"
        time.sleep(0.01)
    journal.close()


def test_an_exit_through_an_error_leaves_every_event_in_the_file(tmp_path: Path) -> None:
    """A process that dies of an unexpected exception without closing its journal still has
    every event it wrote in the file."""
    path = tmp_path / "journal.jsonl"
    code = (
        "import sys; from pathlib import Path\n"
        "from orchestrator.record.events import HostStarted\n"
        "from orchestrator.record.journal import Journal\n"
        "from orchestrator.record.store import file_sink\n"
        "j = Journal(file_sink(Path(sys.argv[1])))\n"
        "for i in range(500): j.write(HostStarted(step='s', host='h', attempt=i))\n"
        "raise RuntimeError('boom')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "boom" in proc.stderr
    assert [json.loads(line)["attempt"] for line in path.read_text().splitlines()] == list(
        range(500)
    )


def test_record_json_keeps_what_the_compiled_encoder_refuses() -> None:
    """Journal lines and documents go through orjson; what it cannot write (an integer past 64
    bits) is written by the standard library instead, int keys become strings, unknown types
    their ``str``; ``NaN`` (which an older journal may hold) still reads back."""
    from orchestrator.record.jsonfast import dumpb, loads

    value = {"big": 2**70, 3: "three", "path": Path("/srv/db"), "ok": "ünï"}
    line = dumpb(value)
    assert b"\n" not in line and b": " not in line  # compact, one line
    assert loads(line) == {"big": 2**70, "3": "three", "path": "/srv/db", "ok": "ünï"}
    assert loads(dumpb({"n": 3, "k": [1.5, None, True]})) == {"n": 3, "k": [1.5, None, True]}
    nan = loads(b'{"lag": NaN}')["lag"]
    assert nan != nan
    try:
        loads(b'{"cut": ')
    except ValueError as exc:
        assert isinstance(exc, json.JSONDecodeError)
    else:
        raise AssertionError("a torn line parsed")
