"""The evaluation report (evaluation-report.html and its tables as CSV, and the edition's
record, edition.json): summary first, then what changed since the previous edition, the
cohort, data quality, survival results, difference in differences, intermediate outcomes,
fidelity, the ARMS review, methods, limitations and provenance."""

from __future__ import annotations

from pathlib import Path

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.disclosure import safe_count
from evaluation.inference import assignments_used
from evaluation.publish.arms import arms_part
from evaluation.publish.changes import RECORD, edition_record, record_json, what_changed
from evaluation.publish.cohort import (
    COVARIATE_LABELS,
    delivery_summary,
    exclusions_table,
    flow_table,
    table_one,
)
from evaluation.publish.common import (
    INFERENCE_PHRASES,
    OUTCOME_LABELS,
    WEIGHTING_LABELS,
    Page,
    page_tables,
    provenance,
    years_phrase,
)
from evaluation.publish.design import STEM as DESIGN_STEM
from evaluation.publish.design import render_design_page
from evaluation.publish.did import did_part
from evaluation.publish.estimates import Results, not_estimable, reason_of
from evaluation.publish.fidelity import fidelity_part
from evaluation.publish.inputs import ReportInputs
from evaluation.publish.intermediate import intermediate_table
from evaluation.publish.sensitivity import sensitivity_part
from evaluation.publish.summary import build_summary, forces_in_use
from evaluation.publish.survival import survival_part
from evaluation.survival_models import headline_inference

TITLE = "Desistance Practice Framework pilot: evaluation report"
NAV = [
    ("summary", "Summary"),
    ("changes", "What changed"),
    ("cohort", "Who was included"),
    ("data-quality", "Data quality"),
    ("survival", "Results by outcome"),
    ("did", "Difference in differences"),
    ("sensitivity", "Sensitivity"),
    ("intermediate", "Intermediate outcomes"),
    ("fidelity", "Fidelity and workload"),
    ("arms", "ARMS protective factors"),
    ("methods", "Methods"),
    ("limitations", "Limitations"),
    ("reproducibility", "Reproducibility"),
]


def _permutations_note(cfg: StudyConfig, in_use: tuple[int, int] | None = None) -> str:
    """Which assignments of the pilot label the permutation tests use, by the rule of
    `evaluation.inference.exact_permutation` (both tests pass it the config): every one (an
    exact test) when there are at most analysis.exact_permutation_limit (or
    analysis.permutations), else a seeded random sample of analysis.permutations, the
    observed assignment among them. Counted over `in_use` (forces, pilot forces) when
    given (`summary.forces_in_use`: a quarantined force is not reassigned), else over the
    configured forces."""
    n, k = in_use if in_use and in_use[0] and in_use[1] else (len(cfg.forces), len(cfg.pilot_codes))
    draws, limit = cfg.analysis.permutations, cfg.analysis.exact_permutation_limit
    total, used = assignments_used(n, k, draws, limit)
    if used == total:
        return (
            f"all {total:,} possible assignments (exact) of {k} pilot forces among {n}, so the "
            f"smallest possible p-value is 1/{total:,}"
        )
    return (
        f"{draws:,} of the {total:,} possible assignments of {k} pilot forces among {n}, drawn "
        f"at random (the observed one and {draws - 1:,} others; seeded, so repeatable; all "
        f"are used only when there are at most {limit:,}), so the smallest possible p-value "
        f"is 1/{draws:,}"
    )


def evaluation_page(
    inputs: ReportInputs, cfg: StudyConfig, previous: tuple[str, dict | None] | None = None
) -> Page:
    """The page; `previous` is the newest published edition as (name, record), None before
    the first (`changes.previous_edition`)."""
    res = Results(inputs.results)
    flow = flow_table(inputs.flow, cfg)
    exclusions = exclusions_table(inputs.flow, cfg)
    t1, balance = table_one(inputs.table_one, res, cfg)
    currency, stale = delivery_summary(inputs.dq, cfg)
    survival = survival_part(inputs.curves, inputs.ph, res, cfg)
    did = did_part(inputs.did, inputs.panel, cfg, res)
    sensitivity = sensitivity_part(inputs.inference, inputs.did, res, cfg)
    intermediate = intermediate_table(inputs.intermediate, cfg)
    fidelity = fidelity_part(inputs.panel, inputs.fidelity, cfg)
    arms = arms_part(inputs.arms, cfg)
    people = safe_count(inputs.flow["in_cohort"].sum(), cfg.disclosure)
    forces = {
        "pilot": len(cfg.pilot_codes),
        "comparison": len(cfg.forces) - len(cfg.pilot_codes),
    }
    summary = build_summary(res, survival["hrs"], cfg, people, forces)
    dq = inputs.dq
    record = edition_record(summary, survival["hrs"], dq, res, cfg)
    changes = what_changed(previous, record, cfg)
    inf = headline_inference(cfg)
    context = {
        "title": TITLE,
        "study": cfg.study,
        "disclosure": cfg.disclosure,
        "provenance": provenance(inputs.results, cfg),
        "nav": NAV,
        "stale": stale,
        "summary": summary,
        "changes": changes,
        "record": record,  # published as the edition's record
        "force_pages": [
            {"name": f.name, "href": f"force-{f.code}.html"} for f in cfg.forces if f.arm == "pilot"
        ],
        "entry_window": cfg.analysis.entry_window_days,
        "follow_up": years_phrase(cfg.analysis.follow_up_days),
        "waiting": cfg.analysis.waiting_period_days,
        "flow": flow,
        "exclusions": exclusions,
        "balance": balance,
        # the arms could not be weighted (results.json: the primary hazard ratio says why)
        "weighting_reason": (
            reason_of(res.hr(cfg.analysis.primary_outcome, "cluster_robust"), cfg)
            if inputs.table_one["smd_weighted"].isna().all()
            else None
        ),
        "not_estimable": not_estimable(res, cfg),
        "table_one": t1,
        "dq_counts": {
            "received": len(dq),
            "quarantined": int(dq["quarantined"].sum()) if len(dq) else 0,
            "stale": len(stale),
            "forces": len(cfg.forces),
        },
        "currency": currency,
        "primary_label": OUTCOME_LABELS[cfg.analysis.primary_outcome].lower(),
        "survival": survival,
        "did": did,
        "sensitivity": sensitivity,
        "outcomes": list(OUTCOMES),
        "outcome_labels": OUTCOME_LABELS,
        "intermediate": intermediate,
        "fidelity": fidelity,
        "arms": arms,
        "weighting_label": WEIGHTING_LABELS[cfg.analysis.weighting],
        "covariates": [COVARIATE_LABELS.get(c, c).lower() for c in cfg.analysis.covariates],
        "truncation": [f"{x:g}" for x in cfg.analysis.weight_truncation],
        "n_forces": len(cfg.forces),
        "n_pilot": len(cfg.pilot_codes),
        "headline_inference": cfg.analysis.cluster_inference,
        "headline_phrase": INFERENCE_PHRASES[inf],
        "permutations_note": _permutations_note(cfg, forces_in_use(res, cfg)),
        "gee_correlation": cfg.analysis.gee_correlation,
        "monitoring": cfg.monitoring,
        "design_page": f"{DESIGN_STEM}.html" if inputs.plan else None,
    }
    tables = page_tables(
        [changes.get("deliveries"), changes.get("estimates")],
        [flow, exclusions, t1, currency],
        [survival[k] for k in ("forest", "hr_table", "horizon", "power", "hr_sensitivity")],
        survival["outcomes"],
        [did["aggregates"], did["charts"]],
        [sensitivity["lofo"], sensitivity["bounds"], intermediate],
        [fidelity[k] for k in ("charts", "by_arm", "by_risk", "by_force")],
        [arms[k] for k in ("c_index", "improvement", "rates")],
    )
    return Page("evaluation-report", "evaluation-report.html.j2", context, tables)


def render_evaluation_report(
    inputs: ReportInputs,
    cfg: StudyConfig,
    out: Path,
    previous: tuple[str, dict | None] | None = None,
) -> dict[Path, str]:
    """The page, its CSVs and the edition's record (`changes.RECORD`); with a plan, the
    pilot-design page (`publish.design`) beside it."""
    page = evaluation_page(inputs, cfg, previous)
    files = {**page.render(out), out / RECORD: record_json(page.context["record"])}
    if inputs.plan:
        files |= render_design_page(inputs.plan, cfg, out, report_href=f"{page.stem}.html")
    return files
