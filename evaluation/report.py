"""Rendering the published HTML reports: Jinja2 templates (autoescaped) from `reports/`,
plotly charts with plotly.js embedded once per file, so every report is one self-contained
file that works offline. Everything passed in must already be disclosure-controlled.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
ARM_COLOURS = {"pilot": "#0072B2", "comparison": "#D55E00"}
ARM_FILL = {"pilot": "rgba(0,114,178,0.18)", "comparison": "rgba(213,94,0,0.18)"}


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


@cache
def plotly_js() -> str:
    """plotly.js source, to embed once per file (no CDN: reports must work offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a <div> that uses the page's embedded plotly.js."""
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def curve_figure(curves: pd.DataFrame, title: str, y_title: str, percent: bool) -> go.Figure:
    """Step curves by arm with CI bands. `curves`: arm, time, value, ci_low, ci_high."""
    fig = go.Figure()
    for arm in ("pilot", "comparison"):
        c = curves[curves.arm == arm].sort_values("time")
        if c.empty:
            continue
        x = (c.time / 30.4375).round(2)  # months read better than days
        scale = 100.0 if percent else 1.0
        fig.add_trace(
            go.Scatter(
                x=pd.concat([x, x[::-1]]),
                y=pd.concat([c.ci_high * scale, (c.ci_low * scale)[::-1]]),
                fill="toself",
                fillcolor=ARM_FILL[arm],
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                line_shape="hv",
                name=f"{arm} 95% CI",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=c.value * scale,
                mode="lines",
                line_shape="hv",
                line={
                    "color": ARM_COLOURS[arm],
                    "width": 2.5,
                    "dash": "solid" if arm == "pilot" else "dash",
                },
                name="Pilot forces" if arm == "pilot" else "Comparison forces",
            )
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 16}},
        xaxis_title="Months since index date",
        yaxis_title=y_title,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        height=380,
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"},
    )
    return fig


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template with plotly.js available as `plotly_js`."""
    return _env().get_template(template).render(plotly_js=plotly_js(), **context)


def write_atomic(text: str, path: Path) -> None:
    """Write then rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
