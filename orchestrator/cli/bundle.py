"""``drx bundle``: one archive of a run that an auditor can keep.

``drx-<run-id>/`` inside the archive holds plan.json, journal.jsonl, summary.json, the report in
html, md, json, junit and OTLP/JSON, every output log (``output/<step>/<host>.log``), and a
``SHA256SUMS`` manifest of all of them that ``sha256sum -c SHA256SUMS`` verifies. A failback's
bundle also holds the failover it reversed, under ``reversed-failover/``. Everything in it is what
drx recorded, and drx masks secrets before it records anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.app import (
    InventoryOpt,
    LogFormatOpt,
    RunbookOpt,
    StateDirOpt,
    StateUrlOpt,
    VerboseOpt,
    app,
    runbook_name,
    store_for,
)
from orchestrator.vocab import Direction

if TYPE_CHECKING:
    from orchestrator.record.store import Store

#: report formats in the bundle, and the file each goes to
REPORTS = (
    ("html", "report.html"),
    ("md", "report.md"),
    ("json", "report.json"),
    ("junit", "report.junit.xml"),
    ("otlp", "trace.otlp.json"),
)


@app.command()
def bundle(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="The archive to write (default drx-RUN.tar.gz)."),
    ] = None,
    runbook: RunbookOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    inventory: InventoryOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Write one evidence archive of a run: plan, journal, summary, the report in every format,
    every output log and a SHA256SUMS manifest (`sha256sum -c` checks it); a failback's also
    holds the failover it reversed. Default: the latest run (with -r, of that runbook).

    Example: drx bundle -o drill-evidence.tar.gz
    """
    from orchestrator.cli.report import choose_run

    store = store_for(state_dir, state_url)
    run_id = choose_run(store, run, runbook_name(runbook))
    target = Path(output or f"drx-{run_id}.tar.gz")
    count = write_bundle(store, run_id, target)
    typer.echo(f"wrote {target} ({count} files; check with: sha256sum -c SHA256SUMS)", err=True)


@dataclass(frozen=True)
class LogFile:
    """An output log in the bundle, streamed from disk rather than read into memory (logs can be
    gigabytes): its first ``size`` bytes — as long as it was when the bundle was begun — are
    what the manifest's ``sha256`` covers and what the archive holds."""

    path: Path
    size: int
    sha256: str


#: a bundle member: bytes drx renders, or a log on disk
Member = bytes | LogFile


def bundle_files(store: Store, run_id: str) -> dict[str, Member]:
    """The files of a run's bundle, by path inside its top directory (manifest excluded)."""
    from orchestrator.record.runs import load_summary

    files = _run_files(store, run_id, "")
    summary = load_summary(store, run_id)
    if summary.direction == Direction.FAILBACK and summary.parent_run:
        files.update(_run_files(store, summary.parent_run, "reversed-failover/"))
    return files


def _run_files(store: Store, run_id: str, prefix: str) -> dict[str, Member]:
    from orchestrator.cli.report import render_report
    from orchestrator.record.runs import load_summary
    from orchestrator.record.store import is_real_dir

    files: dict[str, Member] = {}
    plan = store.read_plan_document(run_id)
    if plan is not None:
        files["plan.json"] = _json(plan)
    events = store.read_journal(run_id)
    files["journal.jsonl"] = "".join(
        json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events
    ).encode()
    files["summary.json"] = _json(load_summary(store, run_id).to_dict())
    for fmt, name in REPORTS:
        files[name] = render_report(store, run_id, fmt, None).encode()
    logs = store.output_dir(run_id)
    if is_real_dir(logs):
        for path in _real_files(logs):
            log = _log_file(path)
            if log is not None:
                # "health:NAME" directories: no ':' in an archive path (not a file name everywhere)
                name = path.relative_to(logs).as_posix().replace("health:", "_health/")
                files[f"output/{name.replace(':', '_')}"] = log
    return {prefix + name: data for name, data in files.items()}


def _real_files(root: Path) -> Iterator[Path]:
    """Every entry under ``root`` reached through real directories only (a site plan's steps
    nest: ID/STEP), sorted; a symlinked directory is not what drx wrote and is not entered."""
    from orchestrator.record.store import is_real_dir

    for entry in sorted(root.iterdir()):
        if is_real_dir(entry):
            yield from _real_files(entry)
        else:
            yield entry


def _log_file(path: Path) -> LogFile | None:
    """The log at ``path`` hashed by streaming, or None if it is not a regular file (a symlink
    to /etc/passwd is not evidence of the run)."""
    from orchestrator.record.store import open_regular

    try:
        fh = open_regular(path)
    except OSError:
        return None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha256()
        left = size
        while left > 0 and (chunk := fh.read(min(left, _CHUNK))):
            digest.update(chunk)
            left -= len(chunk)
    return LogFile(path, size - left, digest.hexdigest())


_CHUNK = 1024 * 1024


def _json(doc: object) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def _sha256(member: Member) -> str:
    if isinstance(member, LogFile):
        return member.sha256
    return hashlib.sha256(member).hexdigest()


def manifest(files: dict[str, Member]) -> bytes:
    """``SHA256SUMS``: one ``<sha256>  <path>`` line per file, the format ``sha256sum -c`` reads."""
    lines = [f"{_sha256(data)}  {name}\n" for name, data in sorted(files.items())]
    return "".join(lines).encode()


def write_bundle(store: Store, run_id: str, target: Path) -> int:
    """Write the bundle of ``run_id`` to ``target`` (a .tar.gz, 0600: it holds command output);
    returns how many files it holds besides the manifest. Written to a temporary name first,
    so a half-written archive is never left under the name asked for."""
    from orchestrator.record.store import open_regular, private_open

    files = bundle_files(store, run_id)
    files["SHA256SUMS"] = manifest(files)
    top = f"drx-{run_id}"
    now = time.time()
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with (
        os.fdopen(private_open(tmp, os.O_WRONLY | os.O_EXCL), "wb") as raw,
        tarfile.open(fileobj=raw, mode="w:gz") as tar,
    ):
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.mtime = int(now)
            info.mode = 0o644
            if isinstance(data, LogFile):
                info.size = data.size
                with open_regular(data.path) as fh:  # exactly the bytes the manifest hashed
                    tar.addfile(info, fh)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tmp.replace(target)
    return len(files) - 1
