"""Post-drill reports: a run's summary.json rendered for operators, auditors and CI.

    from orchestrator.report import render
    render(summary, "html", compare=previous, history=earlier)

Formats: ``text`` (terminal), ``md`` (GitHub-flavoured Markdown), ``html`` (one self-contained
page with an SVG timeline), ``json`` (the summary itself) and ``junit`` (a test suite per run).

Modules: ``model`` reads a summary tolerantly into typed records, ``facts`` computes what every
report says, ``charts`` lays out the SVG charts, ``text`` and ``junit`` render those formats, and
``render`` dispatches, with Jinja2 templates in ``templates/`` for Markdown and HTML.
"""

from __future__ import annotations

import os
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.report.render import FORMATS, render

__all__ = ["FORMATS", "export_configured", "render"]


def export_configured() -> bool:
    """Whether the environment asks for a run's trace to be exported (``report.otlp``, imported
    only then: a run without a collector does not pay for it)."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class _Package(types.ModuleType):
    """This package, importing ``render`` (Jinja2, the charts...) only when first asked for:
    a run that merely exports a trace (``orchestrator.report.otlp``) does not pay for it."""

    @property
    def render(self) -> Any:
        from orchestrator.report.render import render

        return render

    @render.setter
    def render(self, value: Any) -> None:
        """The import system names the submodule ``render`` here; the function keeps the name
        (as the eager ``from orchestrator.report.render import render`` did)."""

    @property
    def FORMATS(self) -> Any:
        from orchestrator.report.render import FORMATS

        return FORMATS


sys.modules[__name__].__class__ = _Package
