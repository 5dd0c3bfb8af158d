"""Fidelity and workload for the reports: DMP use and trained-officer share over time by arm
(and for one force beside the pilot average), contacts per person-month and contact hours
per person-year, before and after go-live.

Disclosure: a share is withheld where its numerator or its denominator (contacts) is fewer
than min_cell, and is computed from the rounded counts (the tables publish the rounded
contacts beside it); a rate per person-month is withheld where the contacts or the
person-months are; the contact counts shown are rounded. Charts show exactly the values of
the table behind them, at the same precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from evaluation import charts
from evaluation.config import StudyConfig
from evaluation.disclosure import publishable_rate, safe_count, share_of_rounded
from evaluation.publish.common import Chart, Table, fmt_num

WINDOW = (-12, 18)  # months since go-live shown in the over-time charts
# measure -> (title, axis title, numerator, denominator, scale)
MEASURES = {
    "dmp": ("Contacts with the DMP used (%)", "DMP used (%)", "dmp_contacts", "contacts", 100.0),
    "trained": (
        "Contacts by a desistance-trained officer (%)",
        "By a trained officer (%)",
        "trained_contacts",
        "contacts",
        100.0,
    ),
    "contacts": (
        "Contacts per person-month",
        "Contacts per person-month",
        "contacts",
        "person_months",
        1.0,
    ),
    "hours": (
        "Contact hours per person-year",
        "Hours per person-year",
        "contact_hours",
        "person_months",
        12.0,
    ),
}
SHARES = ("dmp", "trained")
RISK_LABELS = {
    "low": "Low",
    "medium": "Medium",
    "high": "High",
    "very_high": "Very high",
    "not_assessed": "Not assessed",
}


def pooled(panel: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sums of the fidelity counts over the groups `by`."""
    cols = ["contacts", "dmp_contacts", "trained_contacts", "contact_hours", "person_months"]
    return panel.groupby(list(by), as_index=False)[cols].sum()


def measure_values(g: pd.DataFrame, measure: str, cfg: StudyConfig) -> list[float | None]:
    """A measure per row of pooled sums, disclosure-controlled."""
    _, _, ncol, dcol, scale = MEASURES[measure]
    out = []
    for r in g.itertuples(index=False):
        num, den = getattr(r, ncol), getattr(r, dcol)
        if measure == "hours":
            # hours are not a count; the contacts behind them must reach the threshold
            ok = publishable_rate(r.contacts, r.person_months, cfg.disclosure) is not None
            out.append(scale * num / den if ok else None)
        elif measure in SHARES:
            r_ = share_of_rounded(num, den, cfg.disclosure)
            out.append(None if r_ is None else scale * r_)
        else:
            r_ = publishable_rate(num, den, cfg.disclosure)
            out.append(None if r_ is None else scale * r_)
    return out


DIGITS = {"dmp": 1, "trained": 1, "contacts": 2, "hours": 1}  # tables and charts alike


def _fmt(measure: str, v: float | None) -> str:
    if v is None:
        return "withheld"
    if measure in SHARES:
        return f"{v:.{DIGITS[measure]}f}%"
    return fmt_num(v, DIGITS[measure])


def _window(panel: pd.DataFrame) -> pd.DataFrame:
    return panel[(panel.event_time >= WINDOW[0]) & (panel.event_time <= WINDOW[1])]


def arm_chart(panel: pd.DataFrame, measure: str, cfg: StudyConfig) -> Chart:
    """A measure by arm over months since go-live (pooled over the arm's forces)."""
    g = pooled(_window(panel), ["arm", "event_time"])
    title, *_ = MEASURES[measure]
    series, rows = [], {}
    for arm in ("pilot", "comparison"):
        a = g[g.arm == arm].sort_values("event_time")
        vals = measure_values(a, measure, cfg)
        series.append(
            charts.Series(
                charts.ARM_NAMES[arm],
                a.event_time.tolist(),
                vals,
                charts.ARM_COLOURS[arm],
                charts.ARM_DASH[arm],
                charts.ARM_SYMBOL[arm],
            )
        )
        for e, v in zip(a.event_time, vals, strict=True):
            rows.setdefault(int(e), {"Months since go-live": str(int(e))})[
                charts.ARM_NAMES[arm]
            ] = _fmt(measure, v)
    fig = charts.line_figure(
        series,
        "Months since go-live",
        MEASURES[measure][1],
        0,
        percent=measure in SHARES,
        digits=DIGITS[measure],
    )
    table = Table(
        f"fidelity-{measure}-by-arm",
        f"Data behind the chart: {title.lower()} by arm and month since go-live",
        pd.DataFrame([rows[k] for k in sorted(rows)]).fillna("withheld"),
    )
    post = {
        s.name: [v for x, v in zip(s.x, s.y, strict=True) if x >= 0 and v is not None]
        for s in series
    }
    alt = (
        f"{title} by month since go-live: "
        + "; ".join(
            f"{name} average {_fmt(measure, sum(v) / len(v))} after go-live"
            if v
            else f"{name}: withheld after go-live"
            for name, v in post.items()
        )
        + "."
    )
    return Chart(
        f"fidelity-{measure}",
        title,
        "Pooled over each arm's forces, by month since go-live (a comparison force's pseudo "
        "go-live). Months with fewer than "
        f"{cfg.disclosure.min_cell} contacts of the kind are withheld (gaps).",
        alt,
        charts.figure_html(fig, f"fidelity-{measure}-chart"),
        table,
    )


def force_chart(panel: pd.DataFrame, code: str, name: str, measure: str, cfg: StudyConfig) -> Chart:
    """One force's measure over months since go-live, beside the pilot and comparison
    averages (pooled over each arm's forces)."""
    w = _window(panel)
    title, *_ = MEASURES[measure]
    own = pooled(w[w.force == code], ["event_time"]).sort_values("event_time")
    arms = pooled(w, ["arm", "event_time"])
    defs = [
        (f"{name}", own, charts.BLACK, "solid", "circle", 3.0),
        ("Pilot average", arms[arms.arm == "pilot"], charts.BLUE, "dash", "diamond", 2.0),
        (
            "Comparison average",
            arms[arms.arm == "comparison"],
            charts.VERMILLION,
            "dot",
            "square",
            2.0,
        ),
    ]
    series, rows = [], {}
    for label, g, colour, dash, symbol, width in defs:
        g = g.sort_values("event_time")
        vals = measure_values(g, measure, cfg)
        series.append(
            charts.Series(label, g.event_time.tolist(), vals, colour, dash, symbol, width)
        )
        for e, v in zip(g.event_time, vals, strict=True):
            rows.setdefault(int(e), {"Months since go-live": str(int(e))})[label] = _fmt(measure, v)
    fig = charts.line_figure(
        series,
        "Months since go-live",
        MEASURES[measure][1],
        0,
        percent=measure in SHARES,
        digits=DIGITS[measure],
    )
    table = Table(
        f"{measure}-over-time",
        f"Data behind the chart: {title.lower()}, {name} beside the averages",
        pd.DataFrame([rows[k] for k in sorted(rows)]).fillna("withheld"),
    )
    mine = [v for x, v in zip(series[0].x, series[0].y, strict=True) if x >= 0 and v is not None]
    pilot = [v for x, v in zip(series[1].x, series[1].y, strict=True) if x >= 0 and v is not None]
    alt = (
        f"{title} by month since go-live. After go-live {name} averaged "
        f"{_fmt(measure, sum(mine) / len(mine)) if mine else 'a withheld value'}, the pilot "
        f"forces {_fmt(measure, sum(pilot) / len(pilot)) if pilot else 'a withheld value'}."
    )
    return Chart(
        f"{measure}-over-time",
        title,
        f"{name} (solid black line) beside the pilot forces' average (blue dashes) and "
        "the comparison forces' average (orange dots), by month since go-live. Gaps: fewer "
        f"than {cfg.disclosure.min_cell} contacts of the kind in the month (withheld).",
        alt,
        charts.figure_html(fig, f"{measure}-over-time-chart"),
        table,
    )


def period_table(
    panel: pd.DataFrame, cfg: StudyConfig, by_force: bool, names: dict[str, str], forces=None
) -> Table:
    """Before / after go-live: contacts, DMP and trained shares, contacts per person-month,
    contact hours per person-year; per force (`by_force`) or per arm."""
    p = panel.assign(period=lambda d: d.event_time.ge(0).map({True: "after", False: "before"}))
    if forces is not None:
        p = p[p.force.isin(forces)]
    keys = ["arm", "force", "period"] if by_force else ["arm", "period"]
    g = pooled(p, keys).sort_values(keys, ascending=[False, *[True] * (len(keys) - 2), False])
    vals = {m: measure_values(g, m, cfg) for m in MEASURES}
    rows = []
    for i, r in enumerate(g.itertuples(index=False)):
        row = {}
        if by_force:
            row["Force"] = names.get(r.force, r.force)
        row["Arm"] = r.arm.capitalize()
        row["Go-live"] = "before" if r.period == "before" else "after"
        row["Contacts"] = safe_count(r.contacts, cfg.disclosure)
        for m in MEASURES:
            row[MEASURES[m][0]] = _fmt(m, vals[m][i])
        rows.append(row)
    return Table(
        "fidelity-by-force" if by_force else "fidelity-by-arm",
        (
            "Fidelity and workload by force, before and after go-live"
            if by_force
            else "Fidelity and workload by arm, before and after go-live (pooled over forces)"
        ),
        pd.DataFrame(rows),
        counts=("Contacts",),
    )


def risk_level_table(fid: dict[str, pd.DataFrame], cfg: StudyConfig) -> Table:
    """Contacts per person-month by current risk level, arm and period (pooled)."""
    by = fid["fidelity_by_risk_level"]
    periods = fid["fidelity_monthly"][["force", "month", "arm", "period"]]
    d = by.merge(periods, on=["force", "month"], how="inner")
    g = d.groupby(["arm", "period", "risk_level"], as_index=False)[
        ["contacts", "person_months"]
    ].sum()
    rows = []
    for arm in ("pilot", "comparison"):
        for period in ("pre", "post"):
            row = {"Arm": arm.capitalize(), "Go-live": "before" if period == "pre" else "after"}
            for level, label in RISK_LABELS.items():
                r = g[(g.arm == arm) & (g.period == period) & (g.risk_level == level)]
                v = (
                    publishable_rate(r.contacts.iloc[0], r.person_months.iloc[0], cfg.disclosure)
                    if len(r)
                    else None
                )
                row[label] = "withheld" if v is None else fmt_num(v, 2)
            rows.append(row)
    return Table(
        "contacts-by-risk-level",
        "Contacts per person-month by current risk level, arm and period",
        pd.DataFrame(rows),
        note="Withheld: fewer than the disclosure threshold of contacts or person-months.",
    )


def fidelity_part(panel: pd.DataFrame, fid: dict[str, pd.DataFrame], cfg: StudyConfig) -> dict:
    names = {f.code: f.name for f in cfg.forces}
    return {
        "charts": [arm_chart(panel, m, cfg) for m in ("dmp", "trained", "contacts")],
        "by_arm": period_table(panel, cfg, False, names),
        "by_force": period_table(panel, cfg, True, names),
        "by_risk": risk_level_table(fid, cfg),
    }


def headline_values(panel: pd.DataFrame, cfg: StudyConfig, forces: list[str]) -> dict[str, str]:
    """After go-live, pooled over `forces`: each measure formatted."""
    p = panel[(panel.force.isin(forces)) & (panel.event_time >= 0)]
    g = pooled(p.assign(k=1), ["k"])
    return {m: _fmt(m, measure_values(g, m, cfg)[0]) if len(g) else "withheld" for m in MEASURES}
