"""The data-quality report (published/data-quality.html): per force, which delivery is in
use and whether its data are current; per delivery and revision (each content a delivery
folder has had), the rules checked, passed, failed and warned, whether it was quarantined and
why, and which revision is in use; per finding, the file, column and rule.

Row numbers and values never appear (they stay in the restricted validation reports and in
`dpf-eval check`, which the force's data provider runs); a column is named only if it is
in the data contract (an unexpected column's name could itself be data, say a header row
that is missing); row counts are rounded like every other count.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import public_column, public_file, safe_count
from evaluation.publish.cohort import delivery_summary
from evaluation.publish.common import DASH, Page, Table, force_names, provenance
from evaluation.publish.inputs import ReportInputs
from evaluation.validation import RULES

STATUS_LABELS = {
    "in use": "in use",
    "quarantined": "quarantined",
    "superseded": "superseded by a newer delivery",
    "replaced": "replaced by a newer revision",
    "duplicate": "duplicate (same content as an earlier delivery)",
}
NAV = [
    ("summary", "Summary"),
    ("forces", "By force"),
    ("deliveries", "By delivery and revision"),
    ("findings", "What failed or warned"),
    ("reproducibility", "Reproducibility"),
]


def delivery_rows(dq: pd.DataFrame, cfg: StudyConfig, name: str = "deliveries") -> Table:
    """One row per delivery and revision: status, rules, rows (rounded), quarantined, stale."""
    names = force_names(cfg)
    rows = []
    for r in dq.sort_values(["force", "delivery", "revision"]).to_dict("records"):
        rows.append(
            {
                "Force": names.get(r["force"], r["force"]),
                "Delivery": r["delivery"],
                "Revision": str(r["revision"]),
                "Status": STATUS_LABELS.get(r["status"], r["status"]),
                "Rules checked": str(r["rules_checked"]),
                "Passed": str(r["rules_passed"]),
                "Failed": str(r["rules_failed"]),
                "Warnings": str(r["rules_warned"]),
                "Rows delivered": safe_count(r["rows_total"], cfg.disclosure),
                "Stale": "yes" if r["stale"] else "no",
                "Note": r["reason"],
            }
        )
    return Table(
        name,
        "Every delivery received, and each revision of it: its validation and whether it is used",
        pd.DataFrame(rows),
        counts=("Rows delivered",),
        note="A revision is a delivery's content as received; a delivery changed after it was "
        "received is validated again as its next revision, and every earlier good revision "
        "is kept. Rules: how many of the data contract's checks ran, passed, failed (a failure "
        "quarantines the revision) and warned (reported, not blocking).",
    )


def _column(c: str | None) -> str:
    return public_column(c) or DASH


def _file(f: str) -> str:
    return public_file(f)


def findings_table(findings: list[dict], cfg: StudyConfig) -> Table:
    names = force_names(cfg)
    rows = []

    def order(f: dict) -> tuple:
        return (f["force"], f["delivery"], f.get("revision", 1), f["severity"], f["file"])

    for f in sorted(findings, key=order):
        n = f.get("failing_rows")
        rows.append(
            {
                "Force": names.get(f["force"], f["force"]),
                "Delivery": f["delivery"],
                "Revision": str(f.get("revision", 1)),
                "Severity": "blocking" if f["severity"] == "error" else "warning",
                "File": _file(f["file"]),
                "Column": _column(f.get("column")),
                "Rule": f["rule"],
                "What the rule checks": RULES.get(f["rule"], ("", f["rule"]))[1],
                "Rows affected": safe_count(n, cfg.disclosure) if n else DASH,
            }
        )
    cols = ["Force", "Delivery", "Revision", "Severity", "File", "Column", "Rule",
            "What the rule checks", "Rows affected"]  # fmt: skip
    return Table(
        "findings",
        "What failed or warned, by delivery and revision (no row numbers or values: the "
        "force's data provider sees those with dpf-eval check)",
        pd.DataFrame(rows, columns=cols),
        counts=("Rows affected",),
    )


def force_rows(dq: pd.DataFrame, cfg: StudyConfig) -> Table:
    table, _ = delivery_summary(dq, cfg)
    df = table.frame.copy()
    counts = dq.groupby("force").agg(
        received=("delivery", "nunique"), quarantined=("quarantined", "sum")
    )
    names = force_names(cfg)
    by_name = {names[c]: c for c in names}
    df.insert(
        4,
        "Deliveries received",
        [str(int(counts.received.get(by_name[n], 0))) for n in df["Force"]],
    )
    df.insert(
        5,
        "Quarantined",
        [str(int(counts.quarantined.get(by_name[n], 0))) for n in df["Force"]],
    )
    return Table("forces", "Each force: the delivery in use and whether its data are current", df)


def data_quality_page(inputs: ReportInputs, cfg: StudyConfig) -> Page:
    dq = inputs.dq
    _, stale = delivery_summary(dq, cfg)
    forces = force_rows(dq, cfg)
    deliveries = delivery_rows(dq, cfg)
    findings = findings_table(inputs.findings, cfg)
    quarantined = int(dq["quarantined"].sum()) if len(dq) else 0
    warned = int((dq["rules_warned"] > 0).sum()) if len(dq) else 0
    context = {
        "title": "Data-quality report",
        "charts_in_page": False,  # tables only: no need to embed plotly.js
        "study": cfg.study,
        "disclosure": cfg.disclosure,
        "provenance": provenance(inputs.results, cfg),
        "nav": NAV,
        "stale": stale,
        "figures": [
            (str(len(dq[["force", "delivery"]].drop_duplicates())), "deliveries received"),
            (str(int(dq["in_use"].sum()) if len(dq) else 0), "in use"),
            (str(quarantined), "quarantined"),
            (str(len(stale)), f"of {len(cfg.forces)} forces with data not current"),
        ],
        "quarantined": quarantined,
        "warned": warned,
        "forces": forces,
        "deliveries": deliveries,
        "findings": findings,
        "n_findings": len(inputs.findings),
    }
    return Page("data-quality", "data-quality.html.j2", context, [forces, deliveries, findings])


def render_data_quality_report(
    inputs: ReportInputs, cfg: StudyConfig, out: Path
) -> dict[Path, str]:
    return data_quality_page(inputs, cfg).render(out)
