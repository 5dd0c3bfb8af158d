"""The data dictionary: what each column of each table means, in one place.

Every table a researcher reads, an asset's stored frame in the Dagster UI (its column
schema) or a table of the restricted warehouse (`COMMENT ON COLUMN`), takes its column
descriptions from here. A name means the same in every table unless `TABLE_COLUMNS`
says otherwise for one table. `tests/test_metadata.py` and `tests/test_warehouse.py` fail if
any column of an asset or warehouse table has no description, so a new column comes with
its line here.

No Dagster and no database here: `assets/metadata.py` and `evaluation/warehouse.py` apply it.
"""

from __future__ import annotations

from evaluation.config import OUTCOMES
from evaluation.fidelity import NOT_ASSESSED, REFERRAL_KINDS
from evaluation.schema import RISK_LEVELS, TABLES

_OUTCOME_WORDS = {
    "sexual_reoffence": "a sexual reoffence",
    "any_reoffence": "any reoffence",
    "breach": "a breach of an order or licence condition",
    "any_adverse": "any adverse outcome (reoffence or breach)",
}
_INTERMEDIATE = {
    "employed": "in employment, education or training",
    "settled_accommodation": "in settled accommodation",
    "positive_relationship": "with at least one positive relationship",
    "community_activity": "taking part in a community activity",
    "risk_step_down": "whose risk level stepped down since the baseline assessment",
    "protective_gain": "whose protective-factor score rose since the baseline assessment",
}
_RISK_LEVELS = (*RISK_LEVELS, NOT_ASSESSED)
_WEIGHTINGS = {
    "iptw_att": "inverse probability of treatment weights for the effect on the treated",
    "iptw_ate": "inverse probability of treatment weights for the average effect",
    "overlap": "overlap weights",
}

# A column name that means the same in every table it appears in.
COLUMNS: dict[str, str] = {
    # who, where, when
    "force": "Police force code (the study config's force list).",
    "person_id": "The force's pseudonymous person identifier (restricted).",
    "arm": "Study arm of the force: pilot or comparison.",
    "pilot": "1 if the force is a pilot force, 0 if a comparison force.",
    "go_live": "Date the force adopted the framework (pilot forces; null for comparison).",
    "go_live_month": "First calendar month on or after the force's go-live date.",
    "index_date": "Start of the person's follow-up (later of cohort entry and study start).",
    "end_of_follow_up": "End of the person's follow-up (data cut-off, or force's extract date).",
    "baseline_assessment_date": "Date of the person's baseline risk assessment.",
    "month": "Calendar month (first day).",
    "event_time": "Months since the force's go-live month (negative: before go-live).",
    "period": "pre or post: months before, or from, the force's go-live month.",
    "post": "True for the force's months from its go-live month on.",
    "days": "Days of the month inside the study window.",
    # covariates
    "age": "Age in years at the index date.",
    "male": "1 if recorded male, 0 otherwise.",
    "prior_convictions": "Number of convictions before the index date.",
    "prior_sexual_convictions": "Number of sexual convictions before the index date.",
    "risk_level": "Risk level at the baseline assessment (low, medium, high, very high).",
    "risk_level_score": "Risk level as an ordinal score (low 1 to very high 4).",
    "risk_factors": "Number of risk factors at the baseline assessment.",
    "protective_factors": "Number of protective factors at the baseline assessment.",
    "contact_offence": "1 if the index conviction was a contact offence, 0 otherwise.",
    "on_licence": "1 if on licence at the index date, 0 otherwise.",
    "mappa_level": "MAPPA management level at the index date (1 to 3).",
    "covariate": "Covariate of the propensity model (analysis.covariates).",
    # weights
    "propensity": "Estimated probability of being in a pilot force (logistic propensity model).",
    "weight": "The person's analysis weight (analysis.weighting; truncated at "
    "analysis.weight_truncation; 1 when unweighted).",
    # results.json estimate rows
    "outcome": "Outcome analysed (analysis-plan.md outcome list).",
    "method": "Estimation method (results.json: km, aalen_johansen, cox, rmst, did_cs, ...).",
    "term": "Model term or group the estimate is about (e.g. pilot).",
    "measure": "Quantity estimated (e.g. hazard_ratio, att, risk_difference).",
    "estimate": "Point estimate.",
    "ci_low": "Lower limit of the 95% confidence interval.",
    "ci_high": "Upper limit of the 95% confidence interval.",
    "p_value": "Two-sided p-value.",
    "p": "Two-sided p-value.",
    "n": "Number of people (or units) in the analysis, unweighted.",
    "events": "Number of events, unweighted.",
    "weighting": "Weighting of the estimate: none, iptw_att, iptw_ate or overlap.",
    "inference": "How the interval and p-value were obtained (permutation, "
    "wild_cluster_bootstrap, cluster_robust, jackknife_crv3, naive_unadjusted, ...).",
    "run_id": "The Dagster run that produced the row.",
    # models
    "model": "Which model: primary, adjusted unweighted, naive, or the named variant.",
    "variance": "Variance estimator: robust clustered by force, or model-based.",
    "coef": "Coefficient on the log scale.",
    "hr": "Hazard ratio (pilot versus comparison).",
    "hazard_ratio": "Hazard ratio, exp(coef).",
    "se": "Standard error.",
    "robust_se": "Robust (sandwich) standard error clustered by force.",
    "z": "Wald z statistic, coef / standard error.",
    "converged": "True if the model fit converged.",
    "usable": "True if the estimate can be reported (model converged, enough events).",
    "reason": "Why the estimate or delivery is not usable, or a row not_estimable, in plain "
    "English (empty when it is usable).",
    "reason_design_effect": "Why the minimum detectable hazard ratio allowing for clustering "
    "is not estimable, in plain English (empty when it is).",
    "warnings": "Warnings raised while fitting the model.",
    "covariates_left_out": "Covariates left out of the model (no variation or too sparse).",
    "events_pilot": "Events in the pilot arm, unweighted.",
    "events_comparison": "Events in the comparison arm, unweighted.",
    "loglik": "Log partial likelihood of the fitted model.",
    "df": "Degrees of freedom of the test.",
    "statistic": "Test statistic.",
    "chi2": "Likelihood-ratio chi-squared statistic.",
    "test": "Which test: Grambsch-Therneau or the pilot x late follow-up interaction.",
    "hr_early": "Hazard ratio of pilot before the split of follow-up time.",
    "hr_late": "Hazard ratio of pilot after the split of follow-up time.",
    "cut_days": "Follow-up day at which time is split (median event time).",
    "note": "A note on how to read the row.",
    "detail": "What was done or went wrong for this inference (draws, failures).",
    "seconds": "Seconds taken to compute the row.",
    "p_holm": "Holm-adjusted p-value across the secondary outcomes.",
    "p_benefit": "One-sided permutation p-value for benefit: share of assignments at least as "
    "favourable to the pilot as observed (permutation rows; used by the interim looks).",
    "p_harm": "One-sided permutation p-value for harm: share of assignments at least as "
    "unfavourable to the pilot as observed (permutation rows; used by the interim looks).",
    # survival curves, RMST, power
    "estimator": "Curve estimator: km (Kaplan-Meier) or aalen_johansen (cumulative incidence).",
    "time": "Days since the index date.",
    "at_risk": "Weighted number of people at risk just before this time.",
    "n_at_risk": "Unweighted number of people at risk just before this time (restricted).",
    "value": "Survival probability (km) or cumulative incidence (aalen_johansen) at this time.",
    "tau": "Horizon (days) up to which the restricted mean survival time is computed.",
    "rmst_pilot": "Restricted mean survival time (days) of the pilot arm.",
    "rmst_comparison": "Restricted mean survival time (days) of the comparison arm.",
    "share_pilot": "Share of people in pilot forces.",
    "min_detectable_hr": "Smallest protective hazard ratio detectable with 80% power, 5% "
    "two-sided (Schoenfeld), given the events.",
    "design_effect": "Clustering design effect of the pilot coefficient (cluster-robust over "
    "model-based variance, at least 1).",
    "min_detectable_hr_design_effect": "Minimum detectable hazard ratio with the events "
    "divided by the design effect.",
    "events_needed_hr_0_8": "Events needed to detect a hazard ratio of 0.8 with 80% power.",
    "events_needed_hr_0_8_design_effect": "Events needed for a hazard ratio of 0.8, "
    "multiplied by the design effect.",
    # Table 1
    "mean_pilot": "Covariate mean in the pilot arm, unweighted.",
    "sd_pilot": "Covariate standard deviation in the pilot arm, unweighted.",
    "mean_comparison": "Covariate mean in the comparison arm, unweighted.",
    "sd_comparison": "Covariate standard deviation in the comparison arm, unweighted.",
    "wmean_pilot": "Covariate mean in the pilot arm, weighted.",
    "wmean_comparison": "Covariate mean in the comparison arm, weighted.",
    "smd_unweighted": "Standardised mean difference before weighting.",
    "smd_weighted": "Standardised mean difference under the study's weighting.",
    # deliveries and validation
    "delivery": "Extract date of the delivery (the folder name).",
    "revision": "Revision of the delivery (0 first; a re-sent delivery counts up).",
    "status": "Of a delivery, its validation verdict: ok, warnings or quarantined. Of an "
    "estimate, ok or not_estimable (the data cannot support the analysis).",
    "rows_total": "Rows in all tables of the delivery.",
    "rules_checked": "Validation rules checked.",
    "rules_passed": "Validation rules passed.",
    "rules_failed": "Validation rules failed (any failure quarantines the delivery).",
    "rules_warned": "Validation rules that warned.",
    "quarantined": "True if the delivery failed validation and is not used.",
    "in_use": "True if this is the delivery the force's analysis uses.",
    "stale": "True if the force's delivery in use ends before the study's data cut-off.",
    "content_sha256": "SHA-256 of the delivery's content.",
    "extract_date": "Extract date of the delivery used.",
    "sha256": "SHA-256 of the delivery's content.",
    # cohort flow
    "people_in_extracts": "People in the force's delivery.",
    "excluded_not_eligible": "People excluded as not eligible (analysis-plan.md cohort).",
    "excluded_no_follow_up": "People excluded for having no follow-up time.",
    "in_cohort": "People in the analysis cohort.",
    # force-month panel and fidelity
    "people_managed": "People managed by the force in the month.",
    "person_months": "Person-months of follow-up in the month (or period).",
    "contacts": "Contacts (home visits and meetings) recorded.",
    "contact_hours": "Hours of contact recorded.",
    "dmp_contacts": "Contacts at which the Desistance Management Plan was discussed.",
    "trained_contacts": "Contacts by an officer trained in desistance practice.",
    "dmp_share": "Share of contacts that discussed the Desistance Management Plan.",
    "trained_share": "Share of contacts by a trained officer.",
    "ascertained": "True if every force's data cover the month (not after a stale delivery).",
    "contacts_per_person_month": "Contacts per person-month.",
    "contact_hours_per_person_year": "Hours of contact per person-year.",
    "goals_agreed": "Goals agreed at contacts.",
    "goals_per_contact": "Goals agreed per contact.",
    "referrals": "Referrals to support services (any kind).",
    "referrals_per_100_contacts": "Referrals per 100 contacts.",
    "months": "Months in the period.",
    # difference in differences
    "first_month": "First calendar month of the analysed panel.",
    "last_month": "Last calendar month of the analysed panel.",
    "group": "Go-live month of the force group (Callaway & Sant'Anna group; 0 never treated).",
    "groups": "Number of go-live groups contributing at this event time.",
    "n_treated": "Forces treated in the group-time cell.",
    "n_control": "Control forces in the group-time cell.",
    "att": "Average treatment effect on the treated: difference in events per 1,000 person-months.",
    "aggregation": "Aggregation of the group-time effects: simple, group, dynamic or calendar.",
    "se_boot": "Standard error from the wild cluster bootstrap (Webb weights).",
    "ci_low_boot": "Lower limit of the 95% wild cluster bootstrap interval.",
    "ci_high_boot": "Upper limit of the 95% wild cluster bootstrap interval.",
    "band_low_boot": "Lower limit of the 95% simultaneous bootstrap band.",
    "band_high_boot": "Upper limit of the 95% simultaneous bootstrap band.",
    "p_boot": "Wild cluster bootstrap p-value.",
    "p_bootstrap": "Wild cluster bootstrap p-value.",
    "ci_low_permutation": "Lower limit of the 95% interval by inverting the permutation test.",
    "ci_high_permutation": "Upper limit of the 95% interval by inverting the permutation test.",
    "p_permutation": "Force-level permutation p-value (reassigning which forces are pilots).",
    "p_permutation_att": "Permutation p-value of the unstudentised effect.",
    "p_cluster": "p-value from the force-clustered standard error.",
    "permutations": "Assignments of pilot forces used by the permutation test.",
    "exhaustive": "True if every possible assignment of pilot forces was used.",
    "forces": "Number of forces in the analysis.",
    "force_months": "Number of force-months in the analysis.",
    "treated_rate": "Event rate of the treated forces after go-live, per 1,000 person-months.",
    "att_ratio": "Effect as a rate ratio: treated rate over treated rate minus the effect.",
    "null_low": "2.5% quantile of the permutation null distribution.",
    "null_high": "97.5% quantile of the permutation null distribution.",
    "event_times": "Range of pre-go-live event times tested.",
    "coefficients": "Number of pre-go-live event-time effects tested.",
    "mean_pre_att": "Mean of the pre-go-live event-time effects.",
    "sum_t2": "Sum of squared t statistics of the pre-go-live effects (joint Wald test).",
    "sup_t": "Largest absolute t statistic of the pre-go-live effects.",
    "assignment": "Index of the assignment of pilot forces (0 is the observed one).",
    "observed": "True for the observed assignment of pilot forces.",
    "pilots": "Forces treated as pilots in this assignment.",
    "t": "Studentised test statistic of this assignment.",
    "log_rate_ratio": "Log of the rate ratio.",
    "rate_ratio": "Rate ratio, exp(log rate ratio).",
    # fidelity dose-response
    "dmp_share_post": "Force's share of contacts discussing the Plan after go-live.",
    "trained_share_post": "Force's share of contacts by trained officers after go-live.",
    "events_pre": "Events before go-live.",
    "events_post": "Events after go-live.",
    "rate_pre": "Events per 1,000 person-months before go-live.",
    "rate_post": "Events per 1,000 person-months after go-live.",
    "comparison_rate_ratio": "Comparison forces' rate ratio, after over before.",
    "did_rate_ratio": "Force's rate ratio over the comparison forces' rate ratio.",
    "spearman_dmp_vs_did_rate_ratio": "Spearman correlation across pilot forces of the Plan "
    "share with the difference-in-differences rate ratio.",
    # sensitivity of the difference in differences (evaluation/sensitivity.py)
    "mbar": "Relative magnitude M-bar: post-go-live departures from parallel trends allowed, "
    "as a multiple of the largest pre-go-live one.",
    "largest_pre_violation": "Largest absolute pre-go-live event-study coefficient (D).",
    "bound_low": "Lower end of the effect's range if trends depart by up to M-bar times D.",
    "bound_high": "Upper end of the effect's range if trends depart by up to M-bar times D.",
    "includes_zero": "True if the widened 95% interval includes no change.",
    "breakdown_mbar": "Smallest M-bar at which the widened 95% interval includes no change.",
    # intermediate outcomes
    "target_date": "Date 12 months after the index date, when the outcome is measured.",
    "circumstances_date": "Date of the circumstances record nearest the target date.",
    "assessment_date": "Date of the assessment nearest the target date.",
    "odds_ratio": "Odds ratio of pilot (GEE, clustered by force).",
    "risk_pilot": "Modelled risk in the pilot arm.",
    "risk_comparison": "Modelled risk in the comparison arm.",
    "risk_difference": "Risk difference, pilot minus comparison.",
    "rd_ci_low": "Lower limit of the 95% interval of the risk difference.",
    "rd_ci_high": "Upper limit of the 95% interval of the risk difference.",
    "rd_p_value": "p-value of the risk difference.",
    "working_structure": "Working correlation structure of the GEE (analysis.gee_correlation).",
    "working_correlation": "Estimated working correlation within forces (0: independence).",
    "baseline_term": "Baseline measure of the outcome adjusted for.",
    "sensitivity_structure": "Working correlation of the GEE sensitivity model (the other one).",
    "sensitivity_correlation": "Its estimated working correlation within forces.",
    "sensitivity_odds_ratio": "Odds ratio of pilot in the GEE sensitivity model.",
    "sensitivity_ci_low": "Lower limit of the 95% interval of the sensitivity odds ratio.",
    "sensitivity_ci_high": "Upper limit of the 95% interval of the sensitivity odds ratio.",
    "sensitivity_p_value": "p-value of the sensitivity odds ratio.",
    "sensitivity_reason": "Why the sensitivity model is not estimable (empty when it is).",
    # ARMS protective-factor review
    "comparison": "The models compared.",
    "difference": "Difference in the C-index between the models compared.",
    "c_index": "Harrell's C-index (concordance) of the model.",
    "bootstrap_reps": "Bootstrap draws used for the interval.",
    "protective_band": "Band of the protective-factor score.",
    "people": "People in the group.",
    "person_years": "Person-years of follow-up in the group.",
    "rate_per_100_person_years": "Events per 100 person-years.",
    # warehouse
    "created": "When the run wrote results.json (UTC).",
    "code_version": "Git commit of the code (with -dirty if modified).",
    "config_sha256": "SHA-256 of the study config's YAML text.",
    "yaml": "The study config's YAML text, as read at the run.",
    "primary_outcome": "The study's primary outcome (analysis.primary_outcome).",
    "headline_inference": "The inference of the headline interval and p-value "
    "(analysis.cluster_inference).",
    "is_primary_outcome": "True for the study's primary outcome (analysis.primary_outcome).",
}
COLUMNS.update(
    {
        f"{o}_time": f"Days from the index date to {w} or censoring."
        for o, w in _OUTCOME_WORDS.items()
    }
)
COLUMNS.update(
    {f"{o}_status": f"1 if {w} was observed, 0 if censored." for o, w in _OUTCOME_WORDS.items()}
)
COLUMNS.update({f"{o}_events": f"Events of {w} in the month." for o, w in _OUTCOME_WORDS.items()})
COLUMNS.update({f"rows_{t}": f"Rows in the delivery's {t} table." for t in TABLES})
COLUMNS.update({f"referral_{k}": f"Referrals for {k.replace('_', ' ')}." for k in REFERRAL_KINDS})
COLUMNS.update(
    {
        f"contacts_per_person_month_{lv}": f"Contacts per person-month of people at risk level "
        f"{lv.replace('_', ' ')}."
        for lv in _RISK_LEVELS
    }
)
COLUMNS.update(
    {f"smd_{m}": f"Standardised mean difference with {w}." for m, w in _WEIGHTINGS.items()}
)
COLUMNS.update({k: f"1 if the person was {w} at 12 months." for k, w in _INTERMEDIATE.items()})
COLUMNS.update(
    {f"{k}_baseline": f"1 if the person was {w} at the baseline." for k, w in _INTERMEDIATE.items()}
)

# Where a name means something particular in one table.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "did_design": {
        "weight": "Force's weight: its mean monthly person-months before the first go-live.",
    },
    "did_att_gt": {
        "time": "Calendar period of the group-time cell (months).",
    },
    "fidelity_by_risk_level": {
        "risk_level": "Risk level of the people contacted.",
    },
    "arms_c_index": {
        "model": "The survival model whose concordance is measured.",
    },
    "study_config": {
        "path": "Where the study config was read from.",
        "sha256": "SHA-256 of the YAML text (equals provenance.config_sha256).",
    },
    "weights": {
        "weight": COLUMNS["weight"],
    },
    "headline": {
        "hazard_ratio": "Hazard ratio of pilot from the primary Cox model (the headline).",
        "ci_low": "Lower limit of the headline 95% interval.",
        "ci_high": "Upper limit of the headline 95% interval.",
        "p_value": "Headline two-sided p-value.",
        "inference": "The headline inference (analysis.cluster_inference).",
    },
}

assert set(_OUTCOME_WORDS) == set(OUTCOMES), "every outcome needs its words"


def describe(table: str, column: str) -> str:
    """The description of `column` in `table`.

    Parameters
    ----------
    table : the asset, sub-table or warehouse table name.
    column : the column name.

    Returns
    -------
    The description, or "" when the dictionary has none (tests fail on that; a run does not).
    """
    return TABLE_COLUMNS.get(table, {}).get(column) or COLUMNS.get(column, "")


def undescribed(table: str, columns: list[str]) -> list[str]:
    """The columns of `table` that have no description in the dictionary."""
    return [c for c in columns if not describe(table, c)]
