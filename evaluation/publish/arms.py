"""The ARMS protective-factor review: does adding the protective factors to the risk level
improve prediction of reoffending? Harrell's C with and without them, the difference with
its bootstrap CI, the likelihood-ratio test, and observed rates by risk level and
protective-factor band (counts protected, rates from suppressed counts withheld)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import protect_count_table
from evaluation.publish.common import (
    DASH,
    OUTCOME_SHORT,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
)
from evaluation.publish.fidelity import RISK_LABELS

MODEL_LABELS = {
    "risk_level": "Risk level",
    "risk_level+protective_factors": "Risk level + protective factors",
    "risk_level+risk_factors": "Risk level + ARMS risk factors",
    "risk_level+risk_factors+protective_factors": "Risk level + risk factors + protective factors",
}


def _model(term: str) -> str:
    term = term.strip()
    return MODEL_LABELS.get(term, term.replace("_", " ").replace("+", " + "))


def _comparison(text: str) -> str:
    """'a vs b' -> 'Label a vs Label b'; '+x | y' -> 'x added to y'."""
    if " vs " in text:
        a, b = text.split(" vs ")
        return f"{_model(a)} vs {_model(b)}"
    if "|" in text:
        added, base = text.split("|")
        return f"{added.strip().lstrip('+').replace('_', ' ')} added to {_model(base)}"
    return text


def c_index_table(arms: dict[str, pd.DataFrame]) -> Table:
    rows = [
        {
            "Outcome": OUTCOME_SHORT.get(r["outcome"], r["outcome"]),
            "Model": _model(r["model"]),
            "Harrell's C": fmt_num(r["c_index"], 3),
            "95% CI": fmt_ci(r["ci_low"], r["ci_high"], 3),
        }
        for r in arms["arms_c_index"].to_dict("records")
    ]
    return Table(
        "arms-c-index",
        "How well each model ranks people by their time to reoffending (Harrell's C: 0.5 "
        "is chance, 1 is perfect)",
        pd.DataFrame(rows),
    )


def difference_table(arms: dict[str, pd.DataFrame]) -> Table:
    lr = arms["arms_lr_test"]
    rows = []
    for r in arms["arms_c_difference"].to_dict("records"):
        rows.append(
            {
                "Outcome": OUTCOME_SHORT.get(r["outcome"], r["outcome"]),
                "Comparison": _comparison(r["comparison"]),
                "Difference in C": fmt_num(r["difference"], 3),
                "95% CI (bootstrap)": fmt_ci(r["ci_low"], r["ci_high"], 3),
                "p": fmt_p(r["p_value"]),
            }
        )
    for r in lr.to_dict("records"):
        rows.append(
            {
                "Outcome": OUTCOME_SHORT.get(r["outcome"], r["outcome"]),
                "Comparison": "Likelihood-ratio test: " + _comparison(r["comparison"]),
                "Difference in C": DASH,
                "95% CI (bootstrap)": f"chi-square {fmt_num(r['chi2'], 2)} on {int(r['df'])} df",
                "p": fmt_p(r["p_value"]),
            }
        )
    return Table(
        "arms-improvement",
        "Does adding the protective factors improve prediction? Difference in C and "
        "likelihood-ratio tests",
        pd.DataFrame(rows),
    )


def rates_table(arms: dict[str, pd.DataFrame], cfg: StudyConfig) -> Table:
    """Observed rates per 100 person-years by risk level and protective-factor band. The
    people and events of each outcome sum to totals shown elsewhere, so each column is
    protected within each outcome; a rate is withheld where its events are suppressed."""
    r = arms["arms_rates"].reset_index(drop=True)
    df = pd.DataFrame(
        {
            "Outcome": r["outcome"].map(lambda o: OUTCOME_SHORT.get(o, o)),
            "Risk level": r["risk_level"].map(lambda v: RISK_LABELS.get(v, v)),
            "Protective factors": r["protective_band"].astype(str),
            "People": r["people"],
            "People with the outcome": r["events"],
        }
    )
    out = protect_count_table(
        df, ["People", "People with the outcome"], cfg.disclosure, column_totals=True,
        group_col="Outcome",
    )  # fmt: skip
    hidden = out["People with the outcome"].str.startswith("<") | out["People"].str.startswith("<")
    out["Rate per 100 person-years"] = [
        "withheld" if h else fmt_num(v, 1)
        for h, v in zip(hidden, r["rate_per_100_person_years"], strict=True)
    ]
    return Table(
        "arms-observed-rates",
        "Observed rate of each outcome per 100 person-years by baseline risk level and "
        "number of ARMS protective factors",
        out,
        counts=("People", "People with the outcome"),
        note="Withheld: fewer than the disclosure threshold of people or events in the cell "
        "(or hidden so that such a cell cannot be worked out from the totals).",
    )


def arms_sentences(arms: dict[str, pd.DataFrame]) -> list[str]:
    out = []
    c = arms["arms_c_index"].set_index(["outcome", "model"])
    for r in arms["arms_c_difference"].to_dict("records"):
        if r["comparison"] != "risk_level+protective_factors vs risk_level":
            continue
        o = r["outcome"]
        try:
            base = c.loc[(o, "risk_level"), "c_index"]
            plus = c.loc[(o, "risk_level+protective_factors"), "c_index"]
        except KeyError:
            continue
        lr = arms["arms_lr_test"]
        lr = lr[
            (lr.outcome == o) & (lr.comparison.str.strip() == "+protective_factors | risk_level")
        ]
        p_lr = fmt_p(lr.p_value.iloc[0]) if len(lr) else DASH
        better = r["ci_low"] > 0
        out.append(
            f"{OUTCOME_SHORT.get(o, o)}: adding the protective factors to the risk level moved "
            f"Harrell's C from {fmt_num(base, 3)} to {fmt_num(plus, 3)} (difference "
            f"{fmt_num(r['difference'], 3)}, 95% CI {fmt_ci(r['ci_low'], r['ci_high'], 3)}; "
            f"likelihood-ratio p = {p_lr}): "
            + (
                "the protective factors add information beyond the risk level."
                if better
                else "no clear improvement in prediction."
            )
        )
    return out


def arms_part(arms: dict[str, pd.DataFrame], cfg: StudyConfig) -> dict[str, Any]:
    ci = arms["arms_c_index"]
    return {
        "c_index": c_index_table(arms),
        "improvement": difference_table(arms),
        "rates": rates_table(arms, cfg),
        "sentences": arms_sentences(arms),
        "reps": int(ci["bootstrap_reps"].iloc[0]) if len(ci) else 0,
    }
