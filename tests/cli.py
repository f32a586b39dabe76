"""Running the ``drx`` entry point in-process, as the CLI tests do."""

from __future__ import annotations

import pytest

from orchestrator.cli import main


def drx(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``drx`` entry point in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err
