"""Models: propensity weights and Table 1, survival curves, Cox hazard ratios with their
proportional-hazards checks and few-cluster inference, RMST and power, per outcome.

Every asset loads its inputs, calls one function of `evaluation.survival_models` and
attaches what a researcher needs to judge it as metadata (tables, numbers, JSON); an asset
with checks (`assets.checks.CHECK_SPECS`) runs them in its own step, after its output.
"""

import json
import math
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd
import polars as pl

from assets import checks
from assets.metadata import hazard_ratio_metadata, metadata_table
from evaluation import survival_models as sm
from evaluation.results import estimates_frame
from pipelines.resources import StudyResource


@dg.asset(
    group_name="models",
    kinds={"statsmodels"},
    description="Complete-case analysis frame with propensity weights (statsmodels logistic on "
    "analysis.covariates; analysis.weighting; truncated at analysis.weight_truncation).",
)
def weighted_cohort(
    context: dg.AssetExecutionContext, study: StudyResource, cohort: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    df, diagnostics = sm.analysis_frame(cohort, study.cfg)
    reason = diagnostics.get("not_estimable")
    if reason:
        context.log.warning(f"no weighted comparison of the arms is estimable: {reason}")
    return dg.Output(
        pl.from_pandas(df),
        metadata={
            "rows": len(df),
            "not_estimable": dg.MetadataValue.md(reason or "None: the arms can be compared."),
            "dropped_missing_covariates": diagnostics["rows_dropped_missing_covariates"],
            "weighting": study.cfg.analysis.weighting,
            "propensity_model_converged": bool(diagnostics.get("converged", False)),
            "weights_truncated": int(diagnostics.get("n_truncated") or 0),
            "diagnostics": dg.MetadataValue.json(_jsonable(diagnostics)),
        },
    )


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    check_specs=checks.CHECK_SPECS["table_one"],
    description="Table 1 by arm: covariate means and SDs, standardised mean differences before "
    "and after weighting (every weighting option), and the balance verdict (|SMD| < 0.1).",
)
def table_one(study: StudyResource, weighted_cohort: pl.DataFrame) -> Iterator:
    table, summary = sm.table_one(weighted_cohort.to_pandas(), study.cfg)
    verdict = summary["verdict"]
    methods = pd.DataFrame(
        [{"weighting": m, **v} for m, v in summary["methods"].items()],
        columns=["weighting", "balanced", "max_abs_smd", "failing", "ess_pilot",
                 "ess_comparison", "max_weight", "n_truncated"],
    ).assign(failing=lambda d: d["failing"].map(", ".join))  # fmt: skip
    max_smd = float(verdict["max_abs_smd"])
    yield dg.Output(
        pl.from_pandas(table),
        metadata={
            "balanced": bool(verdict["balanced"]),
            **({"max_abs_smd_after_weighting": max_smd} if math.isfinite(max_smd) else {}),
            "not_balanced": dg.MetadataValue.md(
                f"Not estimable: {verdict['not_estimable']}."
                if verdict.get("not_estimable")
                else ", ".join(verdict["failing"]) or "None: every |SMD| < 0.1."
            ),
            "n_by_arm": dg.MetadataValue.json(summary["n"]),
            "table_one": metadata_table(
                table,
                {
                    "covariate": "Covariate",
                    "mean_pilot": "Pilot mean",
                    "sd_pilot": "Pilot SD",
                    "mean_comparison": "Comparison mean",
                    "sd_comparison": "Comparison SD",
                    "smd_unweighted": "SMD before",
                    "smd_weighted": f"SMD after ({summary['weighting']})",
                    "smd_iptw_att": "SMD iptw_att",
                    "smd_iptw_ate": "SMD iptw_ate",
                    "smd_overlap": "SMD overlap",
                },
            ),
            "weighting_options": metadata_table(
                methods,
                {
                    "weighting": "Weighting",
                    "balanced": "Balanced",
                    "max_abs_smd": "Max |SMD|",
                    "failing": "|SMD| >= 0.1",
                    "ess_pilot": "ESS pilot",
                    "ess_comparison": "ESS comparison",
                    "max_weight": "Max weight",
                    "n_truncated": "Truncated",
                },
            ),
            "summary": dg.MetadataValue.json(_jsonable(summary)),
        },
    )
    yield checks.covariates_balanced(table, study)


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    check_specs=checks.CHECK_SPECS["survival_curves"],
    description="Kaplan-Meier survival and Aalen-Johansen cumulative incidence by arm for every "
    "outcome, weighted; exact at-risk numbers (restricted).",
)
def survival_curves(study: StudyResource, weighted_cohort: pl.DataFrame) -> Iterator:
    df = weighted_cohort.to_pandas()
    curves = sm.survival_curves(df, study.cfg)
    hz = sm.at_horizon(curves, df, study.cfg)
    yield dg.Output(
        pl.from_pandas(curves),
        metadata={
            "rows": len(curves),
            "at_horizon": metadata_table(
                hz,
                {
                    "outcome": "Outcome",
                    "arm": "Arm",
                    "measure": "Measure",
                    "value": "Value",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "events": "Events",
                },
            ),
            "at_horizon_note": (
                f"Horizon {study.cfg.analysis.horizon_days} days; pointwise log-log "
                "intervals with the robust variance clustered by force."
            ),
        },
    )
    yield checks.km_matches_lifelines(curves, df, study)


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    check_specs=checks.CHECK_SPECS["cox_estimates"],
    description="Cox proportional hazards (Efron or Breslow ties) of pilot per outcome: the "
    "primary model (covariates and weights, variance clustered by force), adjusted unweighted, "
    "and naive "
    "(pilot alone); convergence and sparse events flagged.",
)
def cox_estimates(
    context: dg.AssetExecutionContext, study: StudyResource, weighted_cohort: pl.DataFrame
) -> Iterator:
    df = weighted_cohort.to_pandas()
    cox, warnings = sm.cox_models(df, study.cfg)
    for w in warnings:
        context.log.warning(w)
    pilot = cox[cox.term == "pilot"]
    unusable = pilot[(pilot.model == "primary") & ~pilot.usable]
    yield dg.Output(
        pl.from_pandas(cox),
        metadata={
            # the primary model's estimates as numbers, which the UI plots across runs
            **hazard_ratio_metadata(pilot[pilot.model == "primary"].to_dict("records")),
            "hazard_ratios": metadata_table(
                pilot,
                {
                    "outcome": "Outcome",
                    "model": "Model",
                    "weighting": "Weighting",
                    "variance": "Variance",
                    "hr": "HR",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "p": "p",
                    "events_pilot": "Events pilot",
                    "events_comparison": "Events comparison",
                    "converged": "Converged",
                },
            ),
            "outcomes_without_hazard_ratio": dg.MetadataValue.md(
                "\n".join(f"- {r.outcome}: {r.reason}" for r in unusable.itertuples()) or "None."
            ),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "None."),
        },
    )
    yield from checks.cox_checks(cox, df, study)


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    check_specs=checks.CHECK_SPECS["proportional_hazards"],
    description="Proportional-hazards screen of the primary Cox model per outcome: "
    "Grambsch-Therneau test (R cox.zph, KM transform) per term and global, and a test of "
    "pilot x late follow-up (split at the median event time).",
)
def proportional_hazards(
    study: StudyResource, weighted_cohort: pl.DataFrame, cox_estimates: pl.DataFrame
) -> Iterator:
    ph = sm.proportional_hazards(weighted_cohort.to_pandas(), study.cfg, cox_estimates.to_pandas())
    pilot = ph[ph.term.isin(["pilot", "GLOBAL", "pilot:late"])]
    flagged = pilot[pilot.p < 0.05]
    yield dg.Output(
        pl.from_pandas(ph),
        metadata={
            "pilot_and_global": metadata_table(
                pilot,
                {
                    "outcome": "Outcome",
                    "test": "Test",
                    "term": "Term",
                    "statistic": "Statistic",
                    "df": "df",
                    "p": "p",
                    "hr_early": "HR early",
                    "hr_late": "HR late",
                    "cut_days": "Split (days)",
                    "note": "Note",
                },
            ),
            "pilot_and_global_note": (
                "A screen: where p < 0.05 the hazard ratio may change over follow-up; "
                "read the RMST difference (no proportional-hazards assumption) beside it."
            ),
            "flagged_p_below_0_05": dg.MetadataValue.md(
                "\n".join(
                    f"- {r.outcome}: {r.test} {r.term} p = {r.p:.3g}" for r in flagged.itertuples()
                )
                or "None."
            ),
        },
    )
    yield checks.hazards_proportional(ph)


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    description="Force-level inference for the pilot hazard ratio: permutation of which forces "
    "are pilots, wild cluster bootstrap (Webb), cluster jackknife (CRV3) and leave-one-force-"
    "out, beside the cluster-robust interval. analysis.cluster_inference picks the headline.",
)
def few_cluster_inference(
    context: dg.AssetExecutionContext,
    study: StudyResource,
    weighted_cohort: pl.DataFrame,
    cox_estimates: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    cfg = study.cfg
    inf = sm.few_cluster_inference(weighted_cohort.to_pandas(), cfg, cox_estimates.to_pandas())
    main = inf[inf.inference != "leave_one_force_out"]
    lofo = inf[inf.inference == "leave_one_force_out"]
    for r in main[main.detail.str.contains("not found|failed|did not converge")].itertuples():
        context.log.warning(f"{r.outcome} {r.inference}: {r.detail}")
    return dg.Output(
        pl.from_pandas(inf),
        metadata={
            "headline_inference": sm.headline_inference(cfg),
            # the headline estimates as numbers, which the UI plots across runs
            **hazard_ratio_metadata(
                main[main.inference == sm.headline_inference(cfg)]
                .rename(columns={"p_value": "p"})
                .to_dict("records")
            ),
            "hazard_ratios": metadata_table(
                main,
                {
                    "outcome": "Outcome",
                    "inference": "Inference",
                    "hr": "HR",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "p_value": "p",
                    "p_holm": "p (Holm, secondary)",
                    "detail": "Detail",
                },
            ),
            "leave_one_force_out": metadata_table(
                lofo,
                {
                    "outcome": "Outcome",
                    "force": "Force left out",
                    "arm": "Arm",
                    "hr": "HR",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "usable": "Converged",
                },
            ),
            "seconds": float(inf["seconds"].sum()),
        },
    )


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    description="Restricted mean survival time difference (pilot minus comparison, days) at "
    "the horizon per outcome, from the weighted KM curves, with force-clustered and "
    "person-level intervals.",
)
def rmst_estimates(study: StudyResource, weighted_cohort: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    rm = sm.rmst_estimates(weighted_cohort.to_pandas(), study.cfg)
    return dg.Output(
        pl.from_pandas(rm),
        metadata={
            "rmst_difference": metadata_table(
                rm,
                {
                    "outcome": "Outcome",
                    "inference": "Inference",
                    "estimate": "Difference (days)",
                    "ci_low": "95% CI low",
                    "ci_high": "95% CI high",
                    "p_value": "p",
                    "rmst_pilot": "RMST pilot",
                    "rmst_comparison": "RMST comparison",
                    "note": "Note",
                },
            ),
        },
    )


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    description="Events per outcome and the minimum detectable hazard ratio (Schoenfeld, 80% "
    "power, 5% two-sided), without and with the clustering design effect.",
)
def power_estimates(
    study: StudyResource, weighted_cohort: pl.DataFrame, cox_estimates: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    pw = sm.power_estimates(weighted_cohort.to_pandas(), study.cfg, cox_estimates.to_pandas())
    return dg.Output(
        pl.from_pandas(pw),
        metadata={
            "power": metadata_table(
                pw,
                {
                    "outcome": "Outcome",
                    "events": "Events",
                    "min_detectable_hr": "Min detectable HR",
                    "design_effect": "Design effect",
                    "min_detectable_hr_design_effect": "Min detectable HR (design effect)",
                    "events_needed_hr_0_8": "Events for HR 0.8",
                    "events_needed_hr_0_8_design_effect": "Events for HR 0.8 (design effect)",
                },
            ),
            "power_note": (
                "Schoenfeld's formula assumes independent people. With few forces "
                "the design effect (cluster-robust over model-based variance of the pilot "
                "coefficient, itself estimated from few forces) inflates the events needed."
            ),
        },
    )


@dg.asset(
    group_name="models",
    kinds={"polars"},
    description="The survival analyses' results.json rows (km, aalen_johansen, cox per "
    "inference, rmst, logrank, power; names in evaluation.survival_models), collected by "
    "results_json.",
)
def survival_results(
    study: StudyResource,
    weighted_cohort: pl.DataFrame,
    survival_curves: pl.DataFrame,
    cox_estimates: pl.DataFrame,
    few_cluster_inference: pl.DataFrame,
    rmst_estimates: pl.DataFrame,
    power_estimates: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    cfg = study.cfg
    df = weighted_cohort.to_pandas()
    logrank = sm.logrank_estimates(df, cfg)
    rows = sm.survival_estimates(
        survival_curves.to_pandas(),
        cox_estimates.to_pandas(),
        df,
        cfg,
        inference=few_cluster_inference.to_pandas(),
        rmst=rmst_estimates.to_pandas(),
        power=power_estimates.to_pandas(),
        logrank=logrank,
    )
    frame = estimates_frame(rows)
    counts = frame.group_by("method", "measure", "inference", maintain_order=True).len().to_pandas()
    return dg.Output(
        frame,
        metadata={
            "rows": frame.height,
            "headline_inference": sm.headline_inference(cfg),
            "logrank": metadata_table(
                logrank,
                {
                    "outcome": "Outcome",
                    "inference": "Inference",
                    "weighting": "Weighting",
                    "statistic": "Chi-square",
                    "p_value": "p",
                    "observed_pilot": "Observed (pilot)",
                    "expected_pilot": "Expected (pilot)",
                    "reason": "Not estimable because",
                    "note": "Note",
                },
            ),
            "estimates": metadata_table(
                counts,
                {
                    "method": "Method",
                    "measure": "Measure",
                    "inference": "Inference",
                    "len": "Rows",
                },
            ),  # fmt: skip
        },
    )


def _jsonable(d: Any) -> Any:
    """JSON-safe: numpy scalars plain, tuples lists, NaN and infinities null."""
    raw = json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(raw)
