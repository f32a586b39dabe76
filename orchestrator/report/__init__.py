"""Post-drill reports: a run's summary.json rendered for operators, auditors and CI.

    from orchestrator.report import render
    render(summary, "html", compare=previous, history=earlier)

Formats: ``text`` (terminal), ``md`` (GitHub-flavoured Markdown), ``html`` (one self-contained
page with an SVG timeline), ``json`` (the summary itself) and ``junit`` (a test suite per run).

Modules: ``model`` reads a summary tolerantly into typed records, ``facts`` computes what every
report says, ``charts`` lays out the SVG charts, ``text`` and ``junit`` render those formats, and
``render`` dispatches, with Jinja2 templates in ``templates/`` for Markdown and HTML.
"""

from orchestrator.report.render import FORMATS, render

__all__ = ["FORMATS", "render"]
