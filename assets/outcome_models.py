"""Outcome models beside the survival analysis: the force-month panel and difference-in-
differences (analysis-plan.md, analysis 5), the 12-month intermediate outcomes and their GEE
(6), implementation fidelity (7) and the ARMS protective-factor review (8).

Each asset loads its inputs, calls one function of the core (`evaluation.panel`, `.did`,
`.intermediate`, `.fidelity`, `.arms`) and attaches what a researcher needs to judge it as
metadata. Every model that yields results.json rows also yields them as a `<analysis>_results`
frame (the columns of `evaluation.results.Estimate`), which `results_json` collects. The
model cores import scipy and statsmodels, so they are imported inside the asset bodies, where
loading the code location does not pay for them.
"""

import datetime as dt

import dagster as dg
import pandas as pd
import polars as pl

from assets import checks
from assets.analysis_tables import in_use_deliveries, load_in_use
from assets.metadata import (
    bullets,
    cell,
    frame_metadata,
    metadata_table,
    results_metadata,
    tables_metadata,
)
from evaluation.cohort import force_windows
from evaluation.config import StudyConfig
from evaluation.results import estimates_frame
from pipelines.resources import StudyResource

RESULTS_DESCRIPTION = (
    "One row per results.json estimate (outcome, method, term, measure, estimate, ci_low, "
    "ci_high, p_value, n, events, weighting, inference), collected by results_json."
)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def stale_cutoffs(cfg: StudyConfig, in_use: dict[str, str]) -> dict[str, dt.date]:
    """force -> in-use extract date, for the forces whose delivery ends before
    study.data_cutoff (stale): their months after it are not covered, so not at risk."""
    dates = {f: dt.date.fromisoformat(d) for f, d in in_use.items()}
    return {
        w.force: w.cutoff for w in force_windows(cfg, dates) if w.cutoff < cfg.study.data_cutoff
    }


def _in_use(delivery_status: pl.DataFrame) -> dict[str, str]:
    in_use = in_use_deliveries(delivery_status)
    if not in_use:
        raise dg.Failure("No force has a delivery that passed validation: nothing to analyse.")
    return in_use


def _tables(
    study: StudyResource, delivery_status: pl.DataFrame, *names: str
) -> dict[str, pl.DataFrame]:
    _in_use(delivery_status)  # fails plainly if no force has data
    return {name: load_in_use(study, delivery_status, name) for name in names}


# --------------------------------------------------------------------------------------------
# Analysis tables
# --------------------------------------------------------------------------------------------
@dg.asset(
    group_name="analysis_tables",
    kinds={"polars", "parquet"},
    description="Per force and calendar month of the study period: people managed, exact "
    "person-months at risk, proven outcome events (recurrent), contacts, DMP and trained-"
    "officer shares, go-live month and event time, and whether the month is ascertained. A "
    "stale force's months stop at its in-use delivery's extract date.",
)
def force_month_panel(
    context: dg.AssetExecutionContext, study: StudyResource, delivery_status: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    from evaluation.config import OUTCOMES
    from evaluation.panel import force_month_panel as build_panel

    cfg = study.cfg
    in_use = _in_use(delivery_status)
    cutoffs = stale_cutoffs(cfg, in_use)
    t = _tables(study, delivery_status, "people", "contacts", "events", "assessments")
    panel = build_panel(t["people"], t["contacts"], t["events"], t["assessments"], cfg, cutoffs)
    for force, cut in sorted(cutoffs.items()):
        context.log.info(f"force {force}: panel months end at its delivery of {cut} (stale)")
    events = [f"{o}_events" for o in OUTCOMES]
    by_force = (
        panel.group_by("force", "arm", "go_live_month")
        .agg(
            months=pl.len(),
            first_month=pl.col("month").min(),
            last_month=pl.col("month").max(),
            ascertained_months=pl.col("ascertained").sum(),
            person_months=pl.col("person_months").sum(),
            contacts=pl.col("contacts").sum(),
            **{c: pl.col(c).sum() for c in events},
        )
        .sort("force")
    )
    ascertained = panel.filter(pl.col("ascertained"))["month"].n_unique()
    return dg.Output(
        panel,
        metadata={
            **frame_metadata("force_month_panel", panel),
            "forces": panel["force"].n_unique(),
            "months": dg.MetadataValue.md(
                f"{panel['month'].min()} to {panel['month'].max()}; {ascertained} calendar "
                "months ascertained in at least one force (each force's ascertained months "
                f"end {cfg.analysis.waiting_period_days} days before its cut-off)."
            ),
            "person_months": float(panel["person_months"].sum()),
            **{c: int(panel[c].sum()) for c in events},
            "stale_cutoffs": bullets(
                [
                    f"**{f}**: months after {c} left out (the delivery in use ends there)"
                    for f, c in sorted(cutoffs.items())
                ]
            ),
            "by_force": metadata_table(
                by_force,
                {
                    "force": "Force",
                    "arm": "Arm",
                    "go_live_month": "Go-live month",
                    "months": "Months",
                    "first_month": "First",
                    "last_month": "Last",
                    "ascertained_months": "Ascertained",
                    "person_months": "Person-months",
                    "contacts": "Contacts",
                    **{c: c.removesuffix("_events") for c in events},
                },
            ),
        },
    )


@dg.asset(
    group_name="analysis_tables",
    kinds={"polars", "parquet"},
    description="Per cohort person, the 12-month intermediate outcomes (employed, settled "
    "accommodation, positive relationship, community activity from the circumstances record "
    "nearest 12 months after the index date within 3 months; risk step-down and protective "
    "gain from the first assessment 12 months on) with their baseline values. Restricted: "
    "person-level.",
)
def intermediate_outcomes(
    study: StudyResource, delivery_status: pl.DataFrame, cohort: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    from evaluation.intermediate import INTERMEDIATE_OUTCOMES
    from evaluation.intermediate import intermediate_outcomes as build_outcomes

    t = _tables(study, delivery_status, "circumstances", "assessments")
    table = build_outcomes(cohort, t["circumstances"], t["assessments"])
    observed = pd.DataFrame(
        [
            {
                "outcome": o,
                "observed": table[o].count(),
                "yes": int(table[o].sum()),
                "share_yes": table[o].mean(),
            }
            for o in INTERMEDIATE_OUTCOMES
        ]
    )
    return dg.Output(
        table,
        metadata={
            **frame_metadata("intermediate_outcomes", table),
            "with_circumstances_record": table["circumstances_date"].count(),
            "with_later_assessment": table["assessment_date"].count(),
            "outcomes": metadata_table(
                observed,
                {
                    "outcome": "Outcome",
                    "observed": "Observed",
                    "yes": "Yes",
                    "share_yes": "Share yes",
                },
            ),
            "outcomes_note": (
                f"Of {table.height} people in the cohort. Unweighted, both arms together."
            ),
        },
    )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def pretrend_flags(pretrend: pd.DataFrame, headline: str) -> dict[str, list[str]]:
    """Outcomes whose joint pre-trend test has p < 0.05: under the headline inference
    (analysis.cluster_inference), and under the sensitivity inference only. With one pilot
    force per go-live month the bootstrap sees only the comparison forces' noise and rejects
    too often, which is why the permutation test leads by default."""
    lead, other = (
        ("p_permutation", "p_bootstrap")
        if headline == "permutation"
        else ("p_bootstrap", "p_permutation")
    )
    out: dict[str, list[str]] = {"headline": [], "sensitivity": []}
    for r in pretrend.to_dict("records"):
        line = (
            f"{r['outcome']}: p = {r['p_permutation']:.3g} (permutation), "
            f"{r['p_bootstrap']:.3g} (bootstrap sup-t)"
        )
        if r[lead] < 0.05:
            out["headline"].append(line)
        elif r[other] < 0.05:
            out["sensitivity"].append(line)
    return out


@dg.multi_asset(
    group_name="models",
    outs={
        "did_estimates": dg.AssetOut(
            kinds={"pandas"},
            description="Staggered difference-in-differences on the force-month panel, every "
            "outcome: Callaway-Sant'Anna group-time effects and their aggregations, the event "
            "study with pre-trend tests, Poisson two-way fixed effects, with force-level "
            "permutation inference (headline) and a wild cluster bootstrap (Webb). A dict of "
            "tables: did_design, did_att_gt, did_event_study, did_aggregates, did_pretrend, "
            "did_twfe, did_permutation.",
        ),
        "did_results": dg.AssetOut(kinds={"polars"}, description=RESULTS_DESCRIPTION),
    },
)
def difference_in_differences(
    context: dg.AssetExecutionContext, study: StudyResource, force_month_panel: pl.DataFrame
):
    from evaluation.did import did_estimates

    cfg = study.cfg
    tables, rows = did_estimates(force_month_panel, cfg)
    design, agg = tables["did_design"], tables["did_aggregates"]
    simple = agg[agg["aggregation"] == "simple"] if len(agg) else agg
    not_estimable = sorted({r.reason for r in rows if r.status == "not_estimable"})
    for reason in not_estimable:
        context.log.warning(f"not estimable: {reason}")
    pretrend = tables["did_pretrend"]
    flags = pretrend_flags(pretrend, cfg.analysis.cluster_inference)
    for line in flags["headline"]:
        context.log.warning(f"pre-trend test: {line}: parallel trends are in doubt")
    for line in flags["sensitivity"]:
        context.log.info(f"pre-trend test, sensitivity inference only: {line}")
    permutations = int(agg["permutations"].iloc[0]) if len(agg) else 0
    exhaustive = bool(agg["exhaustive"].iloc[0]) if len(agg) else False
    yield dg.Output(
        tables,
        output_name="did_estimates",
        metadata={
            **tables_metadata(tables),
            "forces": len(design),
            "pilot_forces": int(design["pilot"].sum()),
            "months_analysed": dg.MetadataValue.md(
                f"{cell(design['first_month'].iloc[0])} to {cell(design['last_month'].iloc[0])}"
                " (ascertained in every force)"
                if "first_month" in design and len(design)
                else "None."
            ),
            "not_estimable": bullets(not_estimable),
            "headline_inference": cfg.analysis.cluster_inference,
            "permutations": permutations,
            "permutations_exhaustive": exhaustive,
            "simple_att": metadata_table(
                simple,
                {
                    "outcome": "Outcome",
                    "att": "ATT (per 1,000 person-months)",
                    "ci_low_permutation": "95% CI low (permutation)",
                    "ci_high_permutation": "95% CI high (permutation)",
                    "p_permutation": "p (permutation)",
                    "ci_low_boot": "95% CI low (bootstrap)",
                    "ci_high_boot": "95% CI high (bootstrap)",
                    "p_boot": "p (bootstrap)",
                    "treated_rate": "Pilot rate",
                    "att_ratio": "Rate ratio",
                    "events": "Events",
                },
            ),
            "simple_att_note": (
                "Callaway-Sant'Anna, never-treated comparison forces, each month against "
                "the pre-go-live mean, forces weighted by pre-go-live person-months."
            ),
            "pretrend_tests": metadata_table(
                pretrend,
                {
                    "outcome": "Outcome",
                    "event_times": "Event times",
                    "coefficients": "Coefficients",
                    "mean_pre_att": "Mean pre-period effect",
                    "p_permutation": "p (permutation, sum of t²)",
                    "p_bootstrap": "p (bootstrap sup-t)",
                },
            ),
            "pretrend_tests_note": (
                "A small p means the pilot forces' rates already moved differently from "
                "the comparison forces' before go-live."
            ),
            "pretrend_flagged_p_below_0_05": dg.MetadataValue.md(
                "\n".join(f"- {line}" for line in flags["headline"])
                + "".join(
                    f"\n- {line} (sensitivity inference only)" for line in flags["sensitivity"]
                )
                or "None."
            ),
            "twfe_poisson": metadata_table(
                tables["did_twfe"],
                {
                    "outcome": "Outcome",
                    "rate_ratio": "Rate ratio",
                    "ci_low": "95% CI low (cluster-robust)",
                    "ci_high": "95% CI high (cluster-robust)",
                    "p_cluster": "p (cluster-robust)",
                    "p_permutation": "p (permutation)",
                    "force_months": "Force-months",
                    "events": "Events",
                },
            ),
            "twfe_poisson_note": (
                "Two-way fixed effects (force, month) Poisson with offset log person-"
                "months: reported beside the Callaway-Sant'Anna estimate, never instead."
            ),
        },
    )
    results = estimates_frame(rows)
    yield dg.Output(
        results, output_name="did_results", metadata=results_metadata("did_results", results)
    )


@dg.multi_asset(
    group_name="models",
    outs={
        "intermediate_estimates": dg.AssetOut(
            kinds={"pandas", "statsmodels"},
            description="GEE (binomial, logit, clustered by force, robust variance x G/(G-1), "
            "t with G-1 df) of each 12-month intermediate outcome on pilot, its baseline value "
            "and the covariates, with the propensity weights: odds ratio and standardised risk "
            "difference with the working correlation analysis.gee_correlation (independence by "
            "default), and the odds ratio with the other structure as a sensitivity analysis "
            "(not estimable, with the reason, where an exchangeable correlation is not a valid "
            "one); any warnings.",
        ),
        "intermediate_results": dg.AssetOut(kinds={"polars"}, description=RESULTS_DESCRIPTION),
    },
    check_specs=checks.CHECK_SPECS["intermediate_estimates"],
)
def intermediate_outcome_models(
    context: dg.AssetExecutionContext,
    study: StudyResource,
    delivery_status: pl.DataFrame,
    weighted_cohort: pl.DataFrame,
):
    from evaluation.intermediate import gee_data, gee_intermediate

    cfg = study.cfg
    tables = _tables(study, delivery_status, "circumstances", "assessments")
    data = gee_data(weighted_cohort, tables, cfg)  # one frame for the models and their check
    table, rows = gee_intermediate(weighted_cohort, tables, cfg, data=data)
    warnings = [
        f"{r['outcome']}: {r['warnings']}"
        for r in table.to_dict("records")
        if isinstance(r.get("warnings"), str) and r["warnings"]
    ]
    for w in warnings:
        context.log.warning(w)
    structures = table["working_structure"].dropna() if "working_structure" in table else []
    sensitivity = [
        f"{r['outcome']} ({r['sensitivity_structure']}): not estimable, {r['sensitivity_reason']}"
        for r in table.to_dict("records")
        if isinstance(r.get("sensitivity_reason"), str)
    ]
    yield dg.Output(
        table,
        output_name="intermediate_estimates",
        metadata={
            **frame_metadata("intermediate_estimates", table),
            "weighting": cfg.analysis.weighting if "weight" in weighted_cohort.columns else "none",
            "working_structures": dg.MetadataValue.md(
                ", ".join(f"{s}: {n}" for s, n in pd.Series(structures).value_counts().items())
                or "None (no model fitted)."
            ),
            "estimates": metadata_table(
                table,
                {
                    "outcome": "Outcome",
                    "n": "n",
                    "events": "Yes",
                    "forces": "Forces",
                    "odds_ratio": "Odds ratio",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "p_value": "p",
                    "risk_difference": "Risk difference",
                    "rd_ci_low": "RD 95% CI low",
                    "rd_ci_high": "RD 95% CI high",
                    "working_structure": "Working correlation",
                    "working_correlation": "Correlation",
                    "sensitivity_correlation": "Sensitivity: correlation",
                    "sensitivity_odds_ratio": "Sensitivity: odds ratio",
                },
            ),
            "sensitivity_not_estimable": bullets(sensitivity),
            "warnings": bullets(warnings),
        },
    )
    results = estimates_frame(rows)
    yield dg.Output(
        results,
        output_name="intermediate_results",
        metadata=results_metadata("intermediate_results", results),
    )
    yield checks.gee_matches_statsmodels(table, data, study)


@dg.asset(
    group_name="models",
    kinds={"polars", "pandas"},
    description="Implementation fidelity by force and month, pilot and comparison: DMP use, "
    "trained-officer share, goals and referrals per contact, contacts per person-month by "
    "current risk level, contact hours per person-year; summarised before and after go-live; "
    "and an observational dose-response view within the pilot forces. A dict of tables: "
    "fidelity_monthly, fidelity_by_risk_level, fidelity_summary, dose_response, "
    "dose_response_correlation.",
)
def fidelity(
    study: StudyResource, delivery_status: pl.DataFrame, force_month_panel: pl.DataFrame
) -> dg.Output[dict]:
    from evaluation.fidelity import fidelity_tables

    cfg = study.cfg
    in_use = _in_use(delivery_status)
    t = _tables(study, delivery_status, "people", "contacts", "assessments")
    tables = fidelity_tables(
        t["people"],
        t["contacts"],
        t["assessments"],
        force_month_panel,
        cfg,
        stale_cutoffs(cfg, in_use),
    )
    return dg.Output(
        tables,
        metadata={
            **tables_metadata(tables),
            "summary": metadata_table(
                tables["fidelity_summary"],
                {
                    "force": "Force",
                    "arm": "Arm",
                    "period": "Period",
                    "months": "Months",
                    "dmp_share": "DMP share",
                    "trained_share": "Trained share",
                    "goals_per_contact": "Goals per contact",
                    "referrals_per_100_contacts": "Referrals per 100 contacts",
                    "contacts_per_person_month": "Contacts per person-month",
                    "contact_hours_per_person_year": "Contact hours per person-year",
                },
            ),
            "summary_note": (
                "Period: before or from the go-live month (a comparison force's pseudo go-live)."
            ),
            "dose_response_correlation": metadata_table(
                tables["dose_response_correlation"],
                {
                    "outcome": "Outcome",
                    "forces": "Pilot forces",
                    "spearman_dmp_vs_did_rate_ratio": "Spearman (DMP share vs rate ratio)",
                    "note": "Note",
                },
            ),
            "dose_response_correlation_note": (
                "Descriptive only: fidelity was not assigned, and the pilot forces are few."
            ),
        },
    )


@dg.multi_asset(
    group_name="models",
    outs={
        "arms_review": dg.AssetOut(
            kinds={"pandas"},
            description="Do the ARMS protective factors improve prediction of reoffending "
            "beyond the risk level (and the ARMS risk factors)? Cox models per outcome, "
            "Harrell's C with bootstrap CIs of the differences, likelihood-ratio tests and "
            "observed rates by risk level x protective-factor band. A dict of tables: "
            "arms_models, arms_c_index, arms_c_difference, arms_lr_test, arms_rates.",
        ),
        "arms_results": dg.AssetOut(kinds={"polars"}, description=RESULTS_DESCRIPTION),
    },
)
def arms_protective_factor_review(
    context: dg.AssetExecutionContext, study: StudyResource, cohort: pl.DataFrame
):
    from evaluation.arms import arms_prediction

    tables, rows = arms_prediction(cohort, study.cfg)
    models = tables["arms_models"]
    unconverged = sorted(
        {f"{r.outcome}: {r.model}" for r in models.itertuples() if not bool(r.converged)}
    )
    for m in unconverged:
        context.log.warning(f"ARMS Cox model did not converge: {m}")
    c_index = tables["arms_c_index"]
    yield dg.Output(
        tables,
        output_name="arms_review",
        metadata={
            **tables_metadata(tables),
            "people_with_baseline_assessment": int(c_index["n"].iloc[0]) if len(c_index) else 0,
            "people_in_cohort": cohort.height,
            "bootstrap_reps": int(c_index["bootstrap_reps"].iloc[0]) if len(c_index) else 0,
            "c_index": metadata_table(
                c_index,
                {
                    "outcome": "Outcome",
                    "model": "Model",
                    "c_index": "Harrell's C",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "events": "Events",
                },
            ),
            "c_index_differences": metadata_table(
                tables["arms_c_difference"],
                {
                    "outcome": "Outcome",
                    "comparison": "Comparison",
                    "difference": "C difference",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "p_value": "p",
                },
            ),
            "c_index_differences_note": (
                "Percentile bootstrap over people, coefficients held fixed."
            ),
            "likelihood_ratio_tests": metadata_table(
                tables["arms_lr_test"],
                {
                    "outcome": "Outcome",
                    "comparison": "Added",
                    "chi2": "Chi-square",
                    "df": "df",
                    "p_value": "p",
                    "events": "Events",
                },
            ),
            "models_not_converged": bullets(unconverged),
        },
    )
    results = estimates_frame(rows)
    yield dg.Output(
        results, output_name="arms_results", metadata=results_metadata("arms_results", results)
    )
