"""The published reports' charts, drawn from data that is already disclosure-controlled
(`evaluation.disclosure`): a chart's embedded data are published data too, so they carry no
more than the table behind the chart, at no more precision.

Figures are plain plotly.js specifications (dicts of data, layout), rendered by the plotly.js
embedded once in each page: building plotly's Python figure objects costs far more than the
charts need. Colour is never the only cue: every series also has its own line dash or marker
symbol, in the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies;
each colour used has at least 3:1 contrast with the white background, WCAG 1.4.11).

Charts carry no title of their own (the page's caption names them, so they scale on a phone
and read in a screen reader), no mode bar, and axes that do not zoom, so that a finger
scrolling the page on a phone does not pan a chart by accident.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluation.disclosure import DAYS_PER_MONTH

# Okabe-Ito, restricted to the colours with >= 3:1 contrast on white (WCAG 1.4.11).
BLUE, VERMILLION, GREEN, PURPLE, BLACK = "#0072B2", "#D55E00", "#007A5A", "#A6437F", "#1B1B1B"
GREY = "#505A5F"
ARM_COLOURS = {"pilot": BLUE, "comparison": VERMILLION}
ARM_DASH = {"pilot": "solid", "comparison": "dash"}
ARM_SYMBOL = {"pilot": "circle", "comparison": "square"}
ARM_NAMES = {"pilot": "Pilot forces", "comparison": "Comparison forces"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
CONFIG = {
    "displaylogo": False,
    "displayModeBar": False,
    "responsive": True,
    "scrollZoom": False,
    "doubleClick": False,
}

Figure = dict[str, Any]


@dataclass(frozen=True)
class Series:
    """One line of a line chart: x, y (None = gap) and its look."""

    name: str
    x: Sequence
    y: Sequence[float | None]
    colour: str
    dash: str = "solid"
    symbol: str = "circle"
    width: float = 2.5


def _num(values: Any, digits: int = 4) -> list[float | None]:
    """JSON-ready numbers: rounded; NaN, infinities and None as null (a gap in a line: a
    page's JSON cannot hold a non-finite number)."""
    out = []
    for v in np.asarray(values, dtype=object).ravel():
        if v is None:
            out.append(None)
            continue
        f = float(v)
        out.append(round(f, digits) if math.isfinite(f) else None)
    return out


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _axis(title: str, **kw: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 13}},
        "fixedrange": True,
        "showline": True,
        "linecolor": "#6f777b",
        "gridcolor": "#e6e8ea",
        "zeroline": False,
        "ticks": "outside",
        "tickcolor": "#6f777b",
        "automargin": True,
        **kw,
    }


def _figure(data: list[dict], x: dict, y: dict, height: int = 340, **layout: Any) -> Figure:
    return {
        "data": data,
        "layout": {
            "height": height,
            "margin": {"l": 56, "r": 12, "t": 36, "b": 48},
            "paper_bgcolor": "#ffffff",
            "plot_bgcolor": "#ffffff",
            "font": {"family": FONT, "size": 13, "color": BLACK},
            "legend": {
                "orientation": "h",
                "x": 0,
                "y": 1.02,
                "yanchor": "bottom",
                "font": {"size": 13},
            },
            "hovermode": "closest",
            "dragmode": False,
            "xaxis": x,
            "yaxis": y,
            **layout,
        },
    }


def _vline(x: float, dash: str = "dot", width: float = 1.5) -> dict:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": GREY, "width": width, "dash": dash},
    }


def _hline(y: float) -> dict:
    return {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": GREY, "width": 1.5, "dash": "dot"},
    }


def curve_figure(curves: pd.DataFrame, y_title: str, percent: bool = True) -> Figure:
    """Step curves by arm with 95% CI bands. `curves`: arm, time (days, on the monthly
    grid), value, ci_low, ci_high, as `disclosure.publishable_curve` made them; percentages
    to one decimal, as in the table behind the chart."""
    data = []
    scale = 100.0 if percent else 1.0
    for arm in ("pilot", "comparison"):
        c = curves[curves.arm == arm].sort_values("time")
        if c.empty:
            continue
        x = (c.time.to_numpy(dtype=float) / DAYS_PER_MONTH).round(2)
        lo = c.ci_low.to_numpy(dtype=float) * scale
        hi = c.ci_high.to_numpy(dtype=float) * scale
        data.append(
            {
                "type": "scatter",
                "x": _num(np.concatenate([x, x[::-1]]), 2),
                "y": _num(np.concatenate([hi, lo[::-1]]), 1),
                "fill": "toself",
                "fillcolor": _rgba(ARM_COLOURS[arm], 0.16),
                "line": {"width": 0, "shape": "hv"},
                "mode": "lines",
                "hoverinfo": "skip",
                "showlegend": False,
                "name": f"{ARM_NAMES[arm]}: 95% confidence band",
            }
        )
        data.append(
            {
                "type": "scatter",
                "x": _num(x, 2),
                "y": _num(c.value.to_numpy(dtype=float) * scale, 1),
                "mode": "lines",
                "line": {
                    "color": ARM_COLOURS[arm],
                    "width": 2.5,
                    "dash": ARM_DASH[arm],
                    "shape": "hv",
                },
                "name": ARM_NAMES[arm],
                "hovertemplate": "%{y:.1f}% at %{x:.0f} months<extra>"
                + ARM_NAMES[arm]
                + "</extra>",
            }
        )
    last = float(curves.time.max()) / DAYS_PER_MONTH if len(curves) else 24.0
    return _figure(
        data,
        _axis(
            "Months since the index date", range=[0, 6 * math.ceil(last / 6 - 1e-6) + 0.3], dtick=6
        ),
        _axis(y_title),
    )


def forest_figure(rows: pd.DataFrame, inferences: dict[str, tuple[str, str, str]]) -> Figure:
    """Hazard ratios with 95% CIs on a log axis, one line per outcome, one marker per
    inference. `rows`: label, inference, hr, ci_low, ci_high (estimable rows only);
    `inferences`: inference -> (legend name, colour, marker symbol), in drawing order."""
    labels = list(dict.fromkeys(rows["label"]))
    data = []
    n = len(inferences)
    for k, (inf, (name, colour, symbol)) in enumerate(inferences.items()):
        r = rows[rows.inference == inf]
        if r.empty:
            continue
        offset = (k - (n - 1) / 2) * 0.22
        hr = r["hr"].to_numpy(dtype=float)
        data.append(
            {
                "type": "scatter",
                "x": _num(hr),
                "y": [len(labels) - 1 - labels.index(lab) - offset for lab in r["label"]],
                "mode": "markers",
                "marker": {"color": colour, "symbol": symbol, "size": 10},
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": _num(r["ci_high"].to_numpy(dtype=float) - hr),
                    "arrayminus": _num(hr - r["ci_low"].to_numpy(dtype=float)),
                    "color": colour,
                    "thickness": 2,
                    "width": 5,
                },
                "name": name,
                "customdata": [
                    [round(a, 2), round(b, 2)]
                    for a, b in zip(r["ci_low"], r["ci_high"], strict=True)
                ],
                "hovertemplate": "HR %{x:.2f} (%{customdata[0]:.2f} to %{customdata[1]:.2f})"
                "<extra>" + name + "</extra>",
            }
        )
    lo = float(np.nanmin(rows["ci_low"])) if len(rows) else 0.5
    hi = float(np.nanmax(rows["ci_high"])) if len(rows) else 2.0
    span = max(1 / max(lo, 1e-3), hi, 1.25) * 1.08
    ticks = [0.25, 0.33, 0.5, 0.67, 0.8, 1, 1.25, 1.5, 2, 3, 4]
    return _figure(
        data,
        _axis(
            "Hazard ratio (log scale)",
            type="log",
            range=[math.log10(1 / span), math.log10(span)],
            tickvals=ticks,
            ticktext=[f"{t:g}" for t in ticks],
        ),
        _axis(
            "",
            tickvals=list(range(len(labels)))[::-1],
            ticktext=[_wrap(lab, 14) for lab in labels],
            range=[-0.6, len(labels) - 0.4],
            showgrid=False,
            ticks="",
        ),
        height=110 + 70 * max(len(labels), 1),
        shapes=[_vline(1)],
    )


def event_study_figure(
    es: pd.DataFrame, y_title: str, window: tuple[int, int] = (-12, 18)
) -> Figure:
    """Event-study coefficients with 95% CIs: before go-live (pre-trend) and after, in two
    marker styles, over a grey band: the range (95%) the coefficient takes when the pilot
    forces are picked at random. `es`: event_time, att, ci_low, ci_high, null_low,
    null_high (NaN where withheld)."""
    data = []
    band = es.dropna(subset=["null_low", "null_high"]).sort_values("event_time")
    if len(band):
        x = band["event_time"].to_numpy(dtype=float)
        data.append(
            {
                "type": "scatter",
                "x": _num(np.concatenate([x, x[::-1]])),
                "y": _num(np.concatenate([band["null_high"], band["null_low"][::-1]]), 3),
                "fill": "toself",
                "fillcolor": "rgba(80,90,95,0.16)",
                "mode": "lines",
                "line": {"width": 0},
                "hoverinfo": "skip",
                "name": "Range expected by chance",
            }
        )
    for post, name, colour, symbol in (
        (False, "Before go-live (should be near 0)", VERMILLION, "square-open"),
        (True, "After go-live", BLUE, "circle"),
    ):
        r = es[(es.event_time >= 0) == post].dropna(subset=["att"])
        if r.empty:
            continue
        att = r["att"].to_numpy(dtype=float)
        data.append(
            {
                "type": "scatter",
                "x": r["event_time"].astype(int).tolist(),
                "y": _num(att, 3),
                "mode": "markers",
                "marker": {
                    "color": colour,
                    "symbol": symbol,
                    "size": 8,
                    "line": {"width": 2, "color": colour},
                },
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": _num(r["ci_high"].to_numpy(dtype=float) - att, 3),
                    "arrayminus": _num(att - r["ci_low"].to_numpy(dtype=float), 3),
                    "color": colour,
                    "thickness": 1.5,
                    "width": 3,
                },
                "name": name,
                "hovertemplate": "%{y:.2f} at month %{x}<extra></extra>",
            }
        )
    return _figure(
        data,
        _axis("Months since go-live", dtick=3, range=[window[0] - 0.7, window[1] + 0.7]),
        _axis(y_title),
        shapes=[_hline(0), _vline(-0.5, "dash", 1)],
    )


def line_figure(
    series: Sequence[Series],
    x_title: str,
    y_title: str,
    go_live: float | None = None,
    percent: bool = False,
    digits: int = 2,
) -> Figure:
    """Lines over time (gaps where a value is withheld), with an optional go-live marker.
    `digits`: the precision of the table behind the chart; the chart carries no more."""
    data = [
        {
            "type": "scatter",
            "x": list(s.x),
            "y": _num(list(s.y), digits),
            "mode": "lines+markers",
            "line": {"color": s.colour, "dash": s.dash, "width": s.width},
            "marker": {"symbol": s.symbol, "size": 5, "color": s.colour},
            "connectgaps": False,
            "name": s.name,
            "hovertemplate": "%{y:.1f} (month %{x})<extra></extra>",
        }
        for s in series
    ]
    shapes, notes = [], []
    if go_live is not None:
        shapes.append(_vline(go_live, "dash", 1))
        notes.append(
            {
                "x": go_live,
                "y": 1,
                "yref": "paper",
                "text": "go-live",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 12, "color": GREY},
            }
        )
    y = _axis(y_title, range=[-2, 102], dtick=20) if percent else _axis(y_title, rangemode="tozero")
    return _figure(data, _axis(x_title, dtick=6), y, shapes=shapes, annotations=notes)


def _wrap(text: str, width: int) -> str:
    """Break a label onto lines of at most `width` characters (plotly's <br>)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "<br>".join(lines)


def _json(obj: Any) -> str:
    """JSON safe inside a <script> element: <, > and & escaped, as plotly does."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure_html(fig: Figure, div_id: str) -> str:
    """A figure as a <div> and the call that draws it with the page's embedded plotly.js."""
    height = fig["layout"].get("height", 340)
    return (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px;width:100%;">'
        f"</div><script>Plotly.newPlot({_json(div_id)},{_json(fig['data'])},"
        f"{_json(fig['layout'])},{_json(CONFIG)});</script>"
    )
