"""Rendering the published HTML reports: Jinja2 templates (autoescaped, strict about
undefined names) from `reports/templates`, plotly charts with plotly.js embedded once per
file, so every report is one self-contained file that works offline. Everything passed in
must already be disclosure-controlled (`evaluation.disclosure`); the charts are in
`evaluation.charts` (which also writes each chart's <div> and drawing call).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


PLOTLY_JS = Path(__file__).resolve().parent / "publish" / "vendor" / "plotly-basic.min.js"


@cache
def plotly_js() -> str:
    """plotly.js source, to embed once per file (no CDN: reports must work offline): the
    basic bundle, which draws every chart of `evaluation.charts` at a quarter of the full
    bundle's size (vendored; source, version and sha256 in publish/vendor/README.md)."""
    return PLOTLY_JS.read_text(encoding="utf-8")


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template with plotly.js available as `plotly_js`."""
    return _env().get_template(template).render(plotly_js=plotly_js(), **context)


def write_atomic(text: str, path: Path) -> None:
    """Write then rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves the previous file, not debris
        raise
