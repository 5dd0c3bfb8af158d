"""Models: propensity weights, survival curves and Cox hazard ratios per outcome."""


import dagster as dg
import pandas as pd
import polars as pl

from evaluation import survival_models as sm
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
    return dg.Output(
        pl.from_pandas(df),
        metadata={
            "rows": len(df),
            "dropped_missing_covariates": cohort.height - len(df),
            "weighting": study.cfg.analysis.weighting,
            "diagnostics": dg.MetadataValue.json(_jsonable(diagnostics)),
        },
    )


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    description="Kaplan-Meier survival and Aalen-Johansen cumulative incidence by arm for every "
    "outcome, weighted; exact at-risk numbers (restricted).",
)
def survival_curves(study: StudyResource, weighted_cohort: pl.DataFrame) -> pl.DataFrame:
    return pl.from_pandas(sm.survival_curves(weighted_cohort.to_pandas(), study.cfg))


@dg.asset(
    group_name="models",
    kinds={"pandas"},
    description="Cox proportional hazards (Efron ties) of pilot with the covariates and weights, "
    "variance clustered by force, per outcome.",
)
def cox_estimates(
    context: dg.AssetExecutionContext, study: StudyResource, weighted_cohort: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    cox, warnings = sm.cox_by_outcome(weighted_cohort.to_pandas(), study.cfg)
    for w in warnings:
        context.log.warning(w)
    pilot = cox[cox.term == "pilot"]
    return dg.Output(
        pl.from_pandas(cox),
        metadata={
            "hazard_ratios": dg.MetadataValue.md(_md(pilot)),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "None."),
        },
    )


def _md(df: pd.DataFrame) -> str:
    lines = ["| outcome | HR | 95% CI | p | events |", "|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(
            f"| {r.outcome} | {r.hr:.3f} | {r.ci_low:.3f}–{r.ci_high:.3f} | {r.p:.3g} | "
            f"{r.events} |"
        )
    return "\n".join(lines)


def _jsonable(d):
    import json

    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
