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

Each check runs in the step of the asset it checks: the asset declares its specs
(`CHECK_SPECS`, `report_check_specs`) and yields its output, then the check results from the
functions here, on the objects the step has in memory. Each input is loaded once (a check in a
step of its own loads its inputs again through the IO manager: weighted_cohort three times
more), the GEE check takes its design from the frame the asset fitted on (no second
`gee_data`, 0.3 s nationally), the reports' blocking checks read the
pages just rendered (30 MB nationally, plotly.js in every page) rather than storing and
loading them again, and a run has no extra steps and their events. The logic stays here,
beside the assets' modules, so that each asset's module keeps to its own job.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from evaluation import checks
from evaluation.weighting import balance_verdict
from pipelines.resources import StudyResource

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def _result(
    outcome: checks.CheckOutcome, severity: dg.AssetCheckSeverity, **target: Any
) -> dg.AssetCheckResult:
    """The check result of a core outcome; `target` (asset_key, check_name) names which
    check of the asset's step it is."""
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


def _spec(asset: str, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description)


# The checks on the models and results.json, by the asset whose step runs them.
CHECK_SPECS = {
    "table_one": [
        _spec(
            "table_one",
            "covariates_balanced",
            "Covariate balance after weighting: every standardised mean difference below 0.1 "
            "(analysis plan). A warning: the estimates stand, but read them with the "
            "covariates named.",
        )
    ],
    "cox_estimates": [
        _spec(
            "cox_estimates",
            "cox_models_converged",
            "Every Cox model (primary, adjusted unweighted, naive; every outcome) converged. "
            "An error: a model that did not converge has no estimate to report.",
        ),
        _spec(
            "cox_estimates",
            "cox_matches_lifelines",
            "The primary Cox model of the primary outcome re-fitted with lifelines' "
            "CoxPHFitter (Efron ties, the same weights): every hazard ratio agrees to 1e-6 "
            "(skipped with Breslow ties, which lifelines does not fit).",
        ),
    ],
    "survival_curves": [
        _spec(
            "survival_curves",
            "km_matches_lifelines",
            "The Kaplan-Meier curves of the primary outcome (each arm) re-estimated with "
            "lifelines' KaplanMeierFitter (the same weights): agreement to 1e-6 at every time.",
        )
    ],
    "intermediate_estimates": [
        _spec(
            "intermediate_estimates",
            "gee_matches_statsmodels",
            "One GEE (the primary model of the first intermediate outcome fitted, in the "
            "plan's order) re-fitted with statsmodels' own GEE at the working correlation ours "
            "reports (0: independence), and solved "
            "again with its sandwich variance in numpy, independently of statsmodels: the odds "
            "ratio and its interval agree to 1e-6. An error: the published estimate would be "
            "wrong.",
        )
    ],
    "proportional_hazards": [
        _spec(
            "proportional_hazards",
            "hazards_proportional",
            "The proportional-hazards screen of the primary models: no pilot, global or "
            "pilot x late follow-up test with p < 0.05. A warning: where it fails, read the "
            "RMST difference beside the hazard ratio.",
        )
    ],
    "results_json": [
        _spec(
            "results_json",
            "results_meet_contract",
            "results.json against its contract (analysis plan): the run's keys, every "
            "estimate's keys, method and measure vocabularies, status, ci_low <= estimate <= "
            "ci_high.",
        )
    ],
}


def covariates_balanced(table_one: pd.DataFrame, study: StudyResource) -> dg.AssetCheckResult:
    """Table 1's balance verdict after weighting (a warning)."""
    verdict = balance_verdict(table_one, 0.1)
    if study.cfg.analysis.weighting != "none" and table_one["smd_weighted"].isna().all():
        verdict["not_estimable"] = "the arms could not be weighted (see weighted_cohort)"
    summary = {"verdict": verdict, "weighting": study.cfg.analysis.weighting}
    return _result(
        checks.balance(summary), WARN, asset_key="table_one", check_name="covariates_balanced"
    )


def cox_checks(
    cox_estimates: pd.DataFrame, weighted_cohort: pd.DataFrame, study: StudyResource
) -> list[dg.AssetCheckResult]:
    """Every Cox model converged; the primary one agrees with lifelines' re-fit (errors)."""
    cfg = study.cfg
    if cfg.analysis.ties == "breslow":
        # lifelines fits Efron ties only: comparing its fit with a Breslow model would compare
        # two different estimators. The Breslow fit is tested against R coxph(ties =
        # "breslow") in tests/test_survival.py instead.
        text = (
            "The Cox models use Breslow ties (analysis.ties); lifelines has Efron ties only, "
            "so there is no like-for-like comparison."
        )
        lifelines = checks.CheckOutcome(True, text)
    else:
        lifelines = checks.cox_against_lifelines(
            weighted_cohort,
            cox_estimates,
            cfg.analysis.primary_outcome,
            weighted=cfg.analysis.weighting != "none",
        )
    return [
        _result(outcome, ERROR, asset_key="cox_estimates", check_name=name)
        for name, outcome in (
            ("cox_models_converged", checks.cox_convergence(cox_estimates)),
            ("cox_matches_lifelines", lifelines),
        )
    ]


def km_matches_lifelines(
    survival_curves: pd.DataFrame, weighted_cohort: pd.DataFrame, study: StudyResource
) -> dg.AssetCheckResult:
    """The primary outcome's Kaplan-Meier curves agree with lifelines' (an error)."""
    from evaluation.survival_models import frame_problem

    cfg = study.cfg
    reason = frame_problem(weighted_cohort, cfg)
    if reason is not None:  # no curves were estimated: not a failure of this check
        text = f"No Kaplan-Meier curves are estimable ({reason}): nothing to compare."
        outcome = checks.CheckOutcome(True, text)
    else:
        outcome = checks.km_against_lifelines(
            weighted_cohort,
            survival_curves,
            cfg.analysis.primary_outcome,
            weighted=cfg.analysis.weighting != "none",
        )
    return _result(outcome, ERROR, asset_key="survival_curves", check_name="km_matches_lifelines")


def gee_matches_statsmodels(
    intermediate_estimates: pd.DataFrame, data: pd.DataFrame, study: StudyResource
) -> dg.AssetCheckResult:
    """The first fitted intermediate GEE agrees with statsmodels' and a numpy solve (an
    error). `data` is the `gee_data` frame the asset fitted on."""
    from evaluation.intermediate import gee_design

    target = {"asset_key": "intermediate_estimates", "check_name": "gee_matches_statsmodels"}
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
        return _result(checks.CheckOutcome(explained, text), ERROR, **target)
    row = fitted.iloc[0].to_dict()
    design = gee_design(data, row["outcome"], study.cfg)
    return _result(checks.gee_against_statsmodels(design, row), ERROR, **target)


def hazards_proportional(proportional_hazards: pd.DataFrame) -> dg.AssetCheckResult:
    """The proportional-hazards screen of the primary models (a warning)."""
    return _result(
        checks.proportional_hazards(proportional_hazards),
        WARN,
        asset_key="proportional_hazards",
        check_name="hazards_proportional",
    )


def results_meet_contract(results_json: dict) -> dg.AssetCheckResult:
    """results.json against its contract (an error)."""
    return _result(
        checks.results_contract(results_json),
        ERROR,
        asset_key="results_json",
        check_name="results_meet_contract",
    )


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
