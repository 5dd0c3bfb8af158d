"""Cohort sections: who was included (flow by force), Table 1 (balance before and after
weighting) and the data-quality summary the evaluation report shows."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import (
    is_suppressed,
    protect_count_table,
    rounded,
    safe_count,
    share_of_rounded,
    share_on_rounded_scale,
)
from evaluation.publish.common import DASH, Table, fmt_num, fmt_pct, force_names
from evaluation.publish.estimates import Results

COVARIATE_LABELS = {
    "age": "Age at the index date (years)",
    "male": "Men",
    "prior_convictions": "Previous convictions",
    "prior_sexual_convictions": "Previous sexual convictions",
    "risk_level_score": "Risk level (0 low to 3 very high)",
    "risk_factors": "ARMS risk factors present",
    "protective_factors": "ARMS protective factors present",
    "contact_offence": "Index offence a contact offence",
    "on_licence": "On licence at the index date",
    "mappa_level": "MAPPA level",
}
BINARY = {"male", "contact_offence", "on_licence"}
COMPLETE_IMBALANCE = "complete imbalance"  # an infinite SMD (weighting.balance_table)
EXCLUSIONS = {
    "excluded_not_eligible": "Not under management in the entry window",
    "excluded_no_follow_up": "No follow-up before the cut-off",
}


def flow_table(flow: pd.DataFrame, cfg: StudyConfig) -> Table:
    """Cohort flow by force: people in the extracts, excluded, in the cohort. The reasons
    for exclusion are pooled over forces (`exclusions_table`): split by force, one rare
    reason would force a common one to be hidden too (secondary suppression). The totals by
    arm are stated elsewhere, so each column is protected within each arm as well as along
    each row."""
    names = force_names(cfg)
    go_live = {f.code: f.go_live.isoformat() for f in cfg.forces}
    df = flow.sort_values(["arm", "force"], ascending=[False, True]).reset_index(drop=True)
    df = pd.DataFrame(
        {
            "Force": df["force"].map(names),
            "Arm": df["arm"].str.capitalize(),
            "Go-live": df["force"].map(go_live),
            "People in the extracts": df["people_in_extracts"],
            "Excluded": df[list(EXCLUSIONS)].sum(axis=1),
            "People in the cohort": df["in_cohort"],
        }
    )
    counts = ["Excluded", "People in the cohort"]
    df = protect_count_table(
        df, counts, cfg.disclosure, total_col="People in the extracts", column_totals=True,
        group_col="Arm",
    )  # fmt: skip
    return Table(
        "cohort-flow",
        "Who was included, by force (comparison forces: the date they are compared at)",
        df,
        counts=("People in the extracts", *counts),
    )


def exclusions_table(flow: pd.DataFrame, cfg: StudyConfig) -> Table:
    """Why people in the extracts were not in the cohort, by arm (pooled over forces). The
    arm's total excluded is not published exactly (only the forces' rounded counts), so a
    small reason cannot be recovered by subtraction."""
    rows = []
    for col, label in EXCLUSIONS.items():
        rows.append(
            {
                "Reason": label,
                "Pilot forces": flow.loc[flow.arm == "pilot", col].sum(),
                "Comparison forces": flow.loc[flow.arm == "comparison", col].sum(),
            }
        )
    df = protect_count_table(
        pd.DataFrame(rows), ["Pilot forces", "Comparison forces"], cfg.disclosure
    )
    return Table(
        "exclusions",
        "Why people in the extracts were not in the cohort (people, all forces of each arm)",
        df,
        counts=("Pilot forces", "Comparison forces"),
    )


def arm_sizes(res: Results) -> dict[str, int | None]:
    """People in the analysis by arm (complete cases), from the KM rows."""
    out = {}
    for arm in ("pilot", "comparison"):
        rows = res.rows(method="km", term=arm)
        out[arm] = rows[0]["n"] if rows else None
    return out


def _share(mean: float, n: int | None, cfg: StudyConfig) -> str:
    """The share of an arm's n people with a characteristic, from the rounded counts (the
    arm's rounded n is the table's first row)."""
    if n is None or mean is None or math.isnan(mean):
        return DASH
    r = share_of_rounded(round(mean * n), n, cfg.disclosure, complement=True)
    return "withheld" if r is None else fmt_pct(r)


def _weighted_share(mean: float | None, n: int | None, cfg: StudyConfig) -> str:
    """A weighted share of the same people: withheld like a share of counts (either side
    under min_cell), else on the same rounded-count scale."""
    if n is None or mean is None or math.isnan(mean):
        return DASH
    k = mean * n
    small = is_suppressed(k, cfg.disclosure) or is_suppressed(n - k, cfg.disclosure)
    r = None if small else share_on_rounded_scale(mean, n, cfg.disclosure)
    return "withheld" if r is None else fmt_pct(r)


def _mean(mean: float, sd: float | None, digits: int) -> str:
    if mean is None or math.isnan(mean):
        return DASH
    if sd is None or math.isnan(sd):
        return fmt_num(mean, digits)
    return f"{fmt_num(mean, digits)} ({fmt_num(sd, digits)})"


def _smd(smd: float | None) -> str:
    """An SMD as published: an infinite one (one value in each arm) is "complete imbalance"."""
    return COMPLETE_IMBALANCE if smd is not None and math.isinf(smd) else fmt_num(smd, 3)


def _unbalanced(t1: pd.DataFrame, column: str) -> list[str]:
    """The characteristics with |SMD| >= 0.1 in `column`, complete imbalance said so."""
    return [
        f"{COVARIATE_LABELS.get(c, c)} ({COMPLETE_IMBALANCE})" if math.isinf(s)
        else COVARIATE_LABELS.get(c, c)
        for c, s in zip(t1["covariate"], t1[column].abs(), strict=True)
        if s >= 0.1
    ]  # fmt: skip


def table_one(t1: pd.DataFrame, res: Results, cfg: StudyConfig) -> tuple[Table, dict[str, Any]]:
    """Table 1 by arm: means (SD) or percentages, SMD before and after weighting. A share is
    withheld where fewer than min_cell people of an arm have (or lack) the characteristic;
    the weighted comparison share is a share of the same people, so it follows the same rule.
    A characteristic with one value in each arm shows "complete imbalance" (its SMD is
    infinite) and is named among those not balanced."""
    n = arm_sizes(res)
    weighted = cfg.analysis.weighting != "none"
    rows = []
    for r in t1.to_dict("records"):
        cov = r["covariate"]
        label = COVARIATE_LABELS.get(cov, cov.replace("_", " "))
        if cov in BINARY:
            pilot = _share(r["mean_pilot"], n["pilot"], cfg)
            comp = _share(r["mean_comparison"], n["comparison"], cfg)
            wcomp = (
                _weighted_share(r.get("wmean_comparison"), n["comparison"], cfg)
                if weighted
                else DASH
            )
            if "withheld" in (pilot, comp):
                wcomp = "withheld" if weighted else DASH
            label += " (%)"
        else:
            digits = 1 if cov == "age" else 2
            pilot = _mean(r["mean_pilot"], r["sd_pilot"], digits)
            comp = _mean(r["mean_comparison"], r["sd_comparison"], digits)
            wcomp = _mean(r.get("wmean_comparison"), None, digits) if weighted else DASH
            label += ": mean (SD)"
        rows.append(
            {
                "Characteristic": label,
                "Pilot forces": pilot,
                "Comparison forces": comp,
                "SMD before weighting": _smd(r["smd_unweighted"]),
                "Comparison forces, weighted": wcomp,
                "SMD after weighting": _smd(r["smd_weighted"]),
            }
        )
    rows.insert(
        0,
        {
            "Characteristic": "People in the analysis",
            "Pilot forces": safe_count(n["pilot"], cfg.disclosure),
            "Comparison forces": safe_count(n["comparison"], cfg.disclosure),
            "SMD before weighting": DASH,
            "Comparison forces, weighted": DASH,
            "SMD after weighting": DASH,
        },
    )
    smd = t1["smd_weighted"].abs()
    failing = _unbalanced(t1, "smd_weighted")
    before = _unbalanced(t1, "smd_unweighted")
    complete = t1[["smd_unweighted", "smd_weighted"]].abs().eq(math.inf).any(axis=None)
    verdict = {
        "balanced": not failing,
        "failing": failing,
        "failing_before": before,
        "max_smd": float(smd.max()) if len(smd) else None,
        "max_smd_before": float(t1["smd_unweighted"].abs().max()) if len(t1) else None,
        "n": {arm: rounded(v, cfg.disclosure) for arm, v in n.items()},
    }
    return (
        Table(
            "table-1",
            "Table 1: characteristics at the index date by arm, before and after weighting "
            "(SMD: standardised mean difference; below 0.1 in absolute value counts as balanced)",
            pd.DataFrame(rows),
            counts=(),
            note="Complete imbalance: the characteristic has one value for everyone in the "
            "pilot forces and another for everyone in the comparison forces, so the "
            "difference cannot be standardised and no weighting can balance it."
            if complete
            else "",
        ),
        verdict,
    )


def delivery_summary(dq: pd.DataFrame, cfg: StudyConfig) -> tuple[Table, list[dict[str, str]]]:
    """One row per force: the delivery in use and whether its data are current; and the
    stale forces with the reason, for the warning at the top of every page."""
    names = force_names(cfg)
    rows, stale = [], []
    for f in cfg.forces:
        mine = dq[dq.force == f.code]
        use = mine[mine.in_use]
        used = use.iloc[0] if len(use) else None
        newest = mine.sort_values("delivery").iloc[-1] if len(mine) else None
        is_stale = bool(mine["stale"].any()) if len(mine) else True
        reason = (
            used["reason"]
            if used is not None
            else (newest["reason"] if newest is not None else "No delivery received.")
        )
        rows.append(
            {
                "Force": names[f.code],
                "Arm": f.arm.capitalize(),
                "Delivery in use": used["delivery"] if used is not None else "none",
                "Newest delivery": newest["delivery"] if newest is not None else "none",
                "Data current": "no (stale)" if is_stale else "yes",
                "Note": reason,
            }
        )
        if is_stale:
            stale.append({"code": f.code, "force": names[f.code], "reason": reason})
    return (
        Table("data-currency", "The delivery each force's analysis uses", pd.DataFrame(rows)),
        stale,
    )
