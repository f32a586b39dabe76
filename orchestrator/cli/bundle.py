"""``drx bundle``: one archive of a run that an auditor can keep.

``drx-<run-id>/`` inside the archive holds plan.json, journal.jsonl, summary.json, the report in
html, md, json, junit and OTLP/JSON, every output log (``output/<step>/<host>.log``), and a
``SHA256SUMS`` manifest of all of them that ``sha256sum -c SHA256SUMS`` verifies. A failback's
bundle also holds the failover it reversed, under ``reversed-failover/``. Everything in it is what
drx recorded, and drx masks secrets before it records anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
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


def bundle_files(store: Store, run_id: str) -> dict[str, bytes]:
    """The files of a run's bundle, by path inside its top directory (manifest excluded)."""
    from orchestrator.record.runs import load_summary

    files = _run_files(store, run_id, "")
    summary = load_summary(store, run_id)
    if summary.direction == "failback" and summary.parent_run:
        files.update(_run_files(store, summary.parent_run, "reversed-failover/"))
    return files


def _run_files(store: Store, run_id: str, prefix: str) -> dict[str, bytes]:
    from orchestrator.cli.report import render_report
    from orchestrator.record.runs import load_summary

    files: dict[str, bytes] = {}
    plan = store.read_plan(run_id)
    if plan is not None:
        files["plan.json"] = _json(plan)
    events = store.read_events(run_id)
    files["journal.jsonl"] = "".join(
        json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events
    ).encode()
    files["summary.json"] = _json(load_summary(store, run_id).to_dict())
    for fmt, name in REPORTS:
        files[name] = render_report(store, run_id, fmt, None).encode()
    logs = store.output_dir(run_id)
    if logs.is_dir():
        for path in sorted(p for p in logs.rglob("*") if p.is_file()):
            # "health:NAME" directories: no ':' in an archive path (not a file name everywhere)
            name = path.relative_to(logs).as_posix().replace("health:", "_health/")
            name = name.replace(":", "_")
            files[f"output/{name}"] = path.read_bytes()
    return {prefix + name: data for name, data in files.items()}


def _json(doc: object) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def manifest(files: dict[str, bytes]) -> bytes:
    """``SHA256SUMS``: one ``<sha256>  <path>`` line per file, the format ``sha256sum -c`` reads."""
    lines = [
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())
    ]
    return "".join(lines).encode()


def write_bundle(store: Store, run_id: str, target: Path) -> int:
    """Write the bundle of ``run_id`` to ``target`` (a .tar.gz); returns how many files it holds
    besides the manifest. Written to a temporary name first, so a half-written archive is never
    left under the name asked for."""
    files = bundle_files(store, run_id)
    files["SHA256SUMS"] = manifest(files)
    top = f"drx-{run_id}"
    now = time.time()
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = int(now)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(target)
    return len(files) - 1
