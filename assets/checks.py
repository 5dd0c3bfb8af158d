"""Asset checks on the models and the reports, each with the severity that fits it.

The logic is `evaluation.checks` (no Dagster); here each verdict becomes a check on the asset
a researcher reads it beside:

- warnings (the result stands, read it with care): covariate balance after weighting, the
  proportional-hazards screen;
- errors (a result is wrong or missing): model convergence, results.json against its
  contract, the independent re-fits of the primary Cox model and the Kaplan-Meier curves
  with lifelines, and of one GEE with statsmodels' own GEE and by hand;
- blocking (nothing is published): disclosure control and the language check of every page
  and CSV of the three reports, which `publication` waits for.

Checks live in their own module, beside the assets' modules, so that each asset keeps one
job: the checks read the assets as their inputs (through the IO manager). The reports' two
blocking checks are the exception: each report's step runs them (`report_check_specs`,
`report_checks`) on the pages it has just rendered, which are 30 MB nationally (plotly.js in
every page), instead of a step of their own storing and loading them again.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import polars as pl

from evaluation import checks
from evaluation.weighting import balance_verdict
from pipelines.resources import StudyResource

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def _result(
    outcome: checks.CheckOutcome, severity: dg.AssetCheckSeverity, **target: Any
) -> dg.AssetCheckResult:
    """The check result of a core outcome; `target` (asset_key, check_name) for a check
    among several of one step."""
    metadata = {
        k: v if isinstance(v, int | float | str) else dg.MetadataValue.json(v)
        for k, v in outcome.metadata.items()
    }
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata=metadata,
        **target,
    )


@dg.asset_check(
    asset="table_one",
    description="Covariate balance after weighting: every standardised mean difference below "
    "0.1 (analysis plan). A warning: the estimates stand, but read them with the covariates "
    "named.",
)
def covariates_balanced(study: StudyResource, table_one: pl.DataFrame) -> dg.AssetCheckResult:
    t1 = table_one.to_pandas()
    verdict = balance_verdict(t1, 0.1)
    if study.cfg.analysis.weighting != "none" and t1["smd_weighted"].isna().all():
        verdict["not_estimable"] = "the arms could not be weighted (see weighted_cohort)"
    summary = {"verdict": verdict, "weighting": study.cfg.analysis.weighting}
    return _result(checks.balance(summary), WARN)


@dg.asset_check(
    asset="cox_estimates",
    description="Every Cox model (primary, adjusted unweighted, naive; every outcome) "
    "converged. An error: a model that did not converge has no estimate to report.",
)
def cox_models_converged(cox_estimates: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(checks.cox_convergence(cox_estimates.to_pandas()), ERROR)


@dg.asset_check(
    asset="cox_estimates",
    additional_ins={"weighted_cohort": dg.AssetIn("weighted_cohort")},
    description="The primary Cox model of the primary outcome re-fitted with lifelines' "
    "CoxPHFitter (Efron ties, the same weights): every hazard ratio agrees to 1e-6 (skipped "
    "with Breslow ties, which lifelines does not fit).",
)
def cox_matches_lifelines(
    study: StudyResource, cox_estimates: pl.DataFrame, weighted_cohort: pl.DataFrame
) -> dg.AssetCheckResult:
    cfg = study.cfg
    if cfg.analysis.ties == "breslow":
        # lifelines fits Efron ties only: comparing its fit with a Breslow model would compare
        # two different estimators. The Breslow fit is tested against R coxph(ties =
        # "breslow") in tests/test_survival.py instead.
        text = (
            "The Cox models use Breslow ties (analysis.ties); lifelines has Efron ties only, "
            "so there is no like-for-like comparison."
        )
        return _result(checks.CheckOutcome(True, text), ERROR)
    outcome = checks.cox_against_lifelines(
        weighted_cohort.to_pandas(),
        cox_estimates.to_pandas(),
        cfg.analysis.primary_outcome,
        weighted=cfg.analysis.weighting != "none",
    )
    return _result(outcome, ERROR)


@dg.asset_check(
    asset="survival_curves",
    additional_ins={"weighted_cohort": dg.AssetIn("weighted_cohort")},
    description="The Kaplan-Meier curves of the primary outcome (each arm) re-estimated with "
    "lifelines' KaplanMeierFitter (the same weights): agreement to 1e-6 at every time.",
)
def km_matches_lifelines(
    study: StudyResource, survival_curves: pl.DataFrame, weighted_cohort: pl.DataFrame
) -> dg.AssetCheckResult:
    from evaluation.survival_models import frame_problem

    cfg = study.cfg
    df = weighted_cohort.to_pandas()
    reason = frame_problem(df, cfg)
    if reason is not None:  # no curves were estimated: not a failure of this check
        text = f"No Kaplan-Meier curves are estimable ({reason}): nothing to compare."
        return _result(checks.CheckOutcome(True, text), ERROR)
    outcome = checks.km_against_lifelines(
        df,
        survival_curves.to_pandas(),
        cfg.analysis.primary_outcome,
        weighted=cfg.analysis.weighting != "none",
    )
    return _result(outcome, ERROR)


@dg.asset_check(
    asset="intermediate_estimates",
    additional_ins={
        "weighted_cohort": dg.AssetIn("weighted_cohort"),
        "delivery_status": dg.AssetIn("delivery_status"),
    },
    description="One GEE (the primary model of the first intermediate outcome fitted, in the "
    "plan's order) re-fitted with statsmodels' own GEE at the working correlation ours "
    "reports (0: independence), and solved "
    "again with its sandwich variance in numpy, independently of statsmodels: the odds ratio "
    "and its interval agree to 1e-6. An error: the published estimate would be wrong.",
)
def gee_matches_statsmodels(
    study: StudyResource,
    intermediate_estimates: pd.DataFrame,
    weighted_cohort: pl.DataFrame,
    delivery_status: pl.DataFrame,
) -> dg.AssetCheckResult:
    from assets.analysis_tables import load_in_use
    from evaluation.intermediate import gee_data, gee_design

    cfg = study.cfg
    fitted = intermediate_estimates
    # no odds_ratio column: no model was fitted at all
    fitted = fitted[fitted.odds_ratio.notna()] if "odds_ratio" in fitted else fitted.iloc[:0]
    if fitted.empty:
        # passed when every model has its reason (results.json: not estimable); else an error
        reasons = intermediate_estimates.get("reason", pd.Series(dtype=object)).dropna()
        explained = len(intermediate_estimates) > 0 and len(reasons) == len(intermediate_estimates)
        text = (
            "No intermediate-outcome GEE could be estimated (each one's reason is in "
            "results.json): nothing to compare."
            if explained
            else "No intermediate-outcome GEE was fitted."
        )
        return _result(checks.CheckOutcome(explained, text), ERROR)
    row = fitted.iloc[0].to_dict()
    # The same inputs the asset fitted on, rebuilt by the same code (gee_data, gee_design).
    tables = {t: load_in_use(study, delivery_status, t) for t in ("circumstances", "assessments")}
    design = gee_design(gee_data(weighted_cohort, tables, cfg), row["outcome"], cfg)
    return _result(checks.gee_against_statsmodels(design, row), ERROR)


@dg.asset_check(
    asset="proportional_hazards",
    description="The proportional-hazards screen of the primary models: no pilot, global or "
    "pilot x late follow-up test with p < 0.05. A warning: where it fails, read the RMST "
    "difference beside the hazard ratio.",
)
def hazards_proportional(proportional_hazards: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(checks.proportional_hazards(proportional_hazards.to_pandas()), WARN)


@dg.asset_check(
    asset="results_json",
    description="results.json against its contract (analysis plan): the run's keys, every "
    "estimate's keys, method and measure vocabularies, status, ci_low <= estimate <= ci_high.",
)
def results_meet_contract(results_json: dict) -> dg.AssetCheckResult:
    return _result(checks.results_contract(results_json), ERROR)


DISCLOSURE = (
    "Disclosure control re-run over every CSV and page of this report about to be published: "
    "each count <min_cell or a multiple of round_to >= min_cell. Blocking: if it fails, "
    "nothing is published."
)
LANGUAGE = (
    "The language check (language.avoid) on every page and CSV of this report about to be "
    "published. Blocking: if it fails, nothing is published."
)


def report_check_specs(report: str) -> list[dg.AssetCheckSpec]:
    """The two blocking checks of one report's files, each its own check, so that the UI
    shows which report failed which."""
    return [
        dg.AssetCheckSpec(
            "disclosure_control", asset=report, blocking=True, description=DISCLOSURE
        ),
        dg.AssetCheckSpec(
            "person_centred_language", asset=report, blocking=True, description=LANGUAGE
        ),
    ]


def report_checks(
    report: str, files: dict[str, str], study: StudyResource
) -> list[dg.AssetCheckResult]:
    """The results of `report_check_specs` on the report's rendered files."""
    cfg = study.cfg
    return [
        _result(outcome, ERROR, asset_key=report, check_name=name)
        for name, outcome in (
            ("disclosure_control", checks.disclosure(files, cfg.disclosure)),
            ("person_centred_language", checks.language(files, cfg)),
        )
    ]
