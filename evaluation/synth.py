"""Synthetic force deliveries with a known truth, for the demo and for testing the pipeline.

`generate_study(cfg, seed, scale)` simulates every force of a study: the people it manages
during the study period, their ARMS assessments, supervision contacts, events and recorded
circumstances, as the extract contract (`evaluation.schema`, extract-spec.md) describes them.
`write_study` writes one delivery folder per force plus `truth.json`.

How the truth is built (what an analysis should recover):

- Every event type k has the hazard
  `lambda_k * exp(x.beta + force_frailty) * HR_k ** [pilot force and date >= go-live]`,
  constant in time, with ONE linear predictor `x.beta` shared by all types (type-specific
  intercepts only). `x` holds the cohort covariates exactly as the cohort builder derives them:
  age (index year - birth_year, index = later of go-live and management_start), male,
  prior_convictions, prior_sexual_convictions, risk_level_score, risk_factors,
  protective_factors, contact_offence, on_licence. The assessed values stay as at baseline up
  to a year after the index date, so "the latest assessment on or before the index date" is
  what the hazard used; later step-downs and protective gains never change the hazard.
- A proven outcome is an independent mark (probability per type), so the hazard of a composite
  outcome is exactly proportional: its true hazard ratio is the share-weighted mean of the type
  hazard ratios, the shares being the types' proven rates. `truth["hazard_ratio"]` holds them.
- Pilot forces manage higher-risk caseloads (more high/very high risk, more priors), so a
  naive pilot-versus-comparison contrast is biased and an adjusted one recovers the truth.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from evaluation.cohort import OUTCOME_EVENT_TYPES, build_cohort, force_windows
from evaluation.config import OUTCOMES, Force, StudyConfig
from evaluation.extracts import POLARS_TYPE
from evaluation.schema import (
    CONTACT_TYPES,
    END_REASONS,
    EVENT_TYPES,
    REFERRALS,
    RISK_LEVELS,
    SCHEMA_VERSION,
    TABLE_COLUMNS,
    TABLES,
)

GENERATOR_VERSION = "1"
YEAR_DAYS = 365.25
MONTH_DAYS = YEAR_DAYS / 12
EPOCH = dt.date(1970, 1, 1)

# Caseloads: people managed at any time in the period, at scale 1 (lognormal, clipped).
CASELOAD_MEDIAN = 1500
CASELOAD_LOG_SD = 0.4
CASELOAD_RANGE = (600, 3000)
STOCK_SHARE = 0.62  # managed at period start; the rest start during the period
FRAILTY_SD = 0.05  # force-level log-hazard frailty
PILOT_RISK_SHIFT = 0.35  # pilot caseloads: risk latent shifted up (confounding by design)
FORCE_RISK_SD = 0.08

# Log-hazard coefficients of the cohort covariates, common to every event type, and the
# centre at which a person's hazard equals the type's reference rate.
LOG_HAZARD: dict[str, float] = {
    "age": -0.03,
    "male": 0.3,
    "prior_convictions": 0.06,
    "prior_sexual_convictions": 0.15,
    "risk_level_score": 0.45,
    "risk_factors": 0.12,
    "protective_factors": -0.2,
    "contact_offence": 0.1,
    "on_licence": 0.9,
}
LOG_HAZARD_CENTRE: dict[str, float] = {
    "age": 45.0,
    "male": 1.0,
    "prior_convictions": 2.0,
    "prior_sexual_convictions": 0.5,
    "risk_level_score": 1.0,
    "risk_factors": 2.0,
    "protective_factors": 2.0,
    "contact_offence": 0.5,
    "on_licence": 0.4,
}
# Calibrates the reference person so that comparison caseloads show the target rates.
LOG_HAZARD_OFFSET = -0.15


@dataclass(frozen=True)
class _EventModel:
    proven_rate: float  # proven events per person-year at the reference linear predictor
    p_proven: float
    hazard_ratio_of: str  # which configured outcome's hazard ratio the type uses
    p_custody: float  # P(custody at the disposal date | proven)
    lag_median_days: float
    lag_log_sd: float


EVENT_MODEL: dict[str, _EventModel] = {
    "sexual_offence": _EventModel(0.015, 0.55, "sexual_reoffence", 0.6, 75, 0.6),
    "other_offence": _EventModel(0.065, 0.70, "any_reoffence", 0.25, 60, 0.6),
    "notification_breach": _EventModel(0.030, 0.80, "breach", 0.15, 45, 0.6),
    "order_breach": _EventModel(0.020, 0.70, "breach", 0.15, 45, 0.6),
    "recall": _EventModel(0.030, 0.95, "any_adverse", 0.7, 2, 0.8),
}
assert tuple(EVENT_MODEL) == EVENT_TYPES

# Competing exits other than custody and notification end, per year.
TRANSFER_OUT_RATE = 0.025
REMOVED_RATE = 0.004
OTHER_EXIT_RATE = 0.004

# Supervision contacts per person-month by current risk level, and the contact-type mix.
CONTACT_RATE = np.array([0.18, 0.31, 0.6, 1.0])
CONTACT_TYPE_P = np.array(
    [
        [0.45, 0.05, 0.15, 0.25, 0.07, 0.03],
        [0.45, 0.10, 0.13, 0.20, 0.06, 0.06],
        [0.45, 0.15, 0.10, 0.15, 0.05, 0.10],
        [0.42, 0.20, 0.08, 0.10, 0.05, 0.15],
    ]
)
CONTACT_MEDIAN_MINUTES = np.array([50.0, 25.0, 40.0, 15.0, 25.0, 60.0])
REFERRAL_KIND_P = np.array([0.25, 0.20, 0.20, 0.15, 0.10, 0.10])  # kinds after "none"

# Assessment changes from a year after the index date: logit of a step-down (risk level one
# lower) and of a protective gain (one more factor) at each assessment.
STEP_DOWN_LOGIT = -2.0
PROTECTIVE_GAIN_LOGIT = -1.8

# Circumstances after the index date: logistic models on the baseline value and covariates
# (intercept, baseline value, age per 10 years from 45, risk_level_score, protective_factors,
# on_licence). They are exactly the GEE's model form, so its pilot odds ratio is the truth.
CIRCUMSTANCE_MODEL: dict[str, tuple[float, ...]] = {
    "employed": (-1.2, 2.5, -0.4, -0.2, 0.15, -0.2),
    "settled_accommodation": (-0.3, 2.5, 0.0, -0.3, 0.2, -0.3),
    "positive_relationship": (-1.0, 2.0, 0.0, 0.0, 0.2, 0.0),
    "community_activity": (-1.8, 2.0, 0.0, 0.0, 0.2, 0.0),
    "mental_health_support": (-2.0, 2.2, 0.0, 0.0, 0.0, 0.0),
}
OPTIONAL_MISSING = 0.08  # share of missing optional booleans in circumstances

ID_ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", dtype=np.uint8
)
PERSON_ID_LENGTH = 16
OFFICER_ID_LENGTH = 12


@dataclass
class SyntheticStudy:
    """Synthetic deliveries of every force and the truth they were built with.

    `tables` maps force code -> table name -> frame, with the contract's columns in order and
    typed (dates pl.Date, booleans pl.Boolean, integers pl.Int64, text pl.String).
    """

    tables: dict[str, dict[str, pl.DataFrame]]
    truth: dict


def synthetic_cohort(
    cfg: StudyConfig, seed: int = 1, scale: float = 1.0
) -> tuple[pl.DataFrame, dict]:
    """The cohort of a synthetic study, every force's delivery in use, and the study's truth:
    the models' input without writing or reading any delivery."""
    study = generate_study(cfg, seed=seed, scale=scale)

    def stack(table: str) -> pl.DataFrame:
        return pl.concat(
            [study.tables[f][table].with_columns(force=pl.lit(f)) for f in study.tables]
        )

    windows = force_windows(cfg, {f: cfg.study.extract_date for f in study.tables})
    cohort, _ = build_cohort(stack("people"), stack("assessments"), stack("events"), windows, cfg)
    return cohort, study.truth


def generate_study(cfg: StudyConfig, seed: int = 1, scale: float = 1.0) -> SyntheticStudy:
    """Simulate every force of `cfg`; deterministic for (cfg, seed, scale).

    `scale` multiplies the number of people (about 600-3,000 per force at scale 1). Each
    force has its own random stream seeded from (seed, its index in cfg.forces).
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    unknown = sorted(set(cfg.synthetic.odds_ratio_12m) - set(CIRCUMSTANCE_MODEL))
    if unknown:
        raise ValueError(
            f"synthetic.odds_ratio_12m has outcomes the generator does not simulate: {unknown}; "
            f"known: {', '.join(CIRCUMSTANCE_MODEL)}"
        )
    type_hr = {
        k: float(cfg.synthetic.hazard_ratio.get(m.hazard_ratio_of, 1.0))
        for k, m in EVENT_MODEL.items()
    }
    tables: dict[str, dict[str, pl.DataFrame]] = {}
    forces: dict[str, dict] = {}
    for index, force in enumerate(cfg.forces):
        tables[force.code], forces[force.code] = _simulate_force(
            cfg, force, np.random.default_rng([seed, index]), scale, type_hr
        )
    return SyntheticStudy(tables, _truth(cfg, seed, scale, type_hr, forces))


def _truth(
    cfg: StudyConfig, seed: int, scale: float, type_hr: dict[str, float], forces: dict
) -> dict:
    share = {k: m.proven_rate for k, m in EVENT_MODEL.items()}
    hazard_ratio = {}
    for outcome in OUTCOMES:
        types = OUTCOME_EVENT_TYPES[outcome]
        total = sum(share[k] for k in types)
        hazard_ratio[outcome] = round(sum(share[k] * type_hr[k] for k in types) / total, 6)
    or12 = {k: float(cfg.synthetic.odds_ratio_12m.get(k, 1.0)) for k in CIRCUMSTANCE_MODEL}
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "config_sha256": cfg.sha256,
        "extract_date": cfg.study.extract_date.isoformat(),
        "people": sum(f["people"] for f in forces.values()),
        "contacts": sum(f["contacts"] for f in forces.values()),
        "events": sum(f["events"] for f in forces.values()),
        "hazard_ratio": hazard_ratio,
        "event_type_hazard_ratio": type_hr,
        "proven_rate_reference": share,
        "proven_share": {
            o: {k: round(share[k] / sum(share[j] for j in t), 6) for k in t}
            for o, t in OUTCOME_EVENT_TYPES.items()
        },
        "p_proven": {k: m.p_proven for k, m in EVENT_MODEL.items()},
        "log_hazard_coefficients": dict(LOG_HAZARD),
        "log_hazard_centre": dict(LOG_HAZARD_CENTRE),
        "log_hazard_offset": LOG_HAZARD_OFFSET,
        "frailty_sd": FRAILTY_SD,
        "odds_ratio_12m": or12,
        "circumstance_model": {
            k: dict(
                zip(
                    (
                        "intercept",
                        "baseline",
                        "age_per_10y_from_45",
                        "risk_level_score",
                        "protective_factors",
                        "on_licence",
                    ),
                    v,
                    strict=True,
                )
            )
            for k, v in CIRCUMSTANCE_MODEL.items()
        },
        "risk_step_down_odds_ratio": float(cfg.synthetic.risk_step_down_odds_ratio),
        "protective_gain_odds_ratio": float(cfg.synthetic.risk_step_down_odds_ratio),
        "forces": forces,
        "notes": [
            "hazard_ratio: true conditional hazard ratio of pilot (on/after go-live) in a Cox "
            "model of the first proven event with the cohort covariates; composites are the "
            "proven-rate-weighted mean of the event-type hazard ratios (event_type_hazard_ratio)",
            "the same linear predictor drives every event type; force frailty (log scale, SD "
            "frailty_sd) is not a cohort covariate",
            "disposal lags are lognormal, about 5% beyond 180 days, equal in both arms",
            "risk_step_down / protective_gain odds ratios apply at each assessment from a year "
            "after the index date (so at the first assessment >= 12 months after index), among "
            "people who can step down (not low) or gain (fewer than 4)",
            "odds_ratio_12m: conditional odds ratio of pilot in the logistic model of "
            "circumstance_model, at every record after the index date",
        ],
    }


# --- one force ---------------------------------------------------------------------------


def _day(d: dt.date) -> int:
    return (d - EPOCH).days


def _year(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _logistic(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def _categorical(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One draw per row of a probability matrix (rows sum to 1): per-row rng.choice."""
    u = rng.random(p.shape[0])
    return np.minimum((u[:, None] > np.cumsum(p, axis=1)).sum(axis=1), p.shape[1] - 1)


def _pseudonyms(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Unique random ids of `ID_ALPHABET`, starting with a letter, never four digits in a row
    (so nothing looks like a PNC, NI or other reference number)."""
    codes = rng.integers(0, len(ID_ALPHABET), size=(n, length))
    codes[:, 0] = rng.integers(0, 52, size=n)
    while True:
        digit = (codes >= 52) & (codes < 62)
        bad = (digit[:, :-3] & digit[:, 1:-2] & digit[:, 2:-1] & digit[:, 3:]).any(axis=1)
        ids = ID_ALPHABET[codes].view(f"S{length}").ravel()
        _, first = np.unique(ids, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        bad |= dup
        if not bad.any():
            return ids.astype(str)
        codes[bad] = rng.integers(0, len(ID_ALPHABET), size=(int(bad.sum()), length))
        codes[bad, 0] = rng.integers(0, 52, size=int(bad.sum()))


def _dates(days: np.ndarray, missing: np.ndarray | None = None) -> pl.Series:
    values = days.astype(np.float64)
    if missing is not None:
        values = np.where(missing, np.nan, values)
    return pl.Series(values, nan_to_null=True).cast(pl.Int32).cast(pl.Date)


def _choose(values: tuple, index: np.ndarray) -> pl.Series:
    """Text values by index; index len(values) gives a missing value."""
    return pl.Series([*values, None], dtype=pl.String).gather(index)


def _frame(table: str, columns: dict[str, pl.Series | np.ndarray]) -> pl.DataFrame:
    """A table in the contract's column order and types."""
    return pl.DataFrame(
        [
            pl.Series(columns[col.name]).cast(POLARS_TYPE[col.dtype]).alias(col.name)
            for col in TABLE_COLUMNS[table]
        ]
    )


def _simulate_force(
    cfg: StudyConfig,
    force: Force,
    rng: np.random.Generator,
    scale: float,
    type_hr: dict[str, float],
) -> tuple[dict[str, pl.DataFrame], dict]:
    """One force's five tables and its realised parameters (for truth.json)."""
    period_start = _day(cfg.study.period_start)
    extract = _day(cfg.study.extract_date)
    go_live = _day(force.go_live)
    pilot = force.arm == "pilot"

    # Force-level draws come first, so that they do not depend on scale.
    caseload = int(
        np.clip(round(CASELOAD_MEDIAN * math.exp(rng.normal(0, CASELOAD_LOG_SD))), *CASELOAD_RANGE)
    )
    frailty = float(rng.normal(0, FRAILTY_SD))
    risk_shift = float(rng.normal(PILOT_RISK_SHIFT if pilot else 0.0, FORCE_RISK_SD))
    contact_intensity = float(rng.uniform(0.85, 1.15))
    dmp_level = float(rng.uniform(0.40, 0.85)) if pilot else 0.0
    n = max(1, round(caseload * scale))

    # --- people: a stock managed at period start, then new entries over the period ---
    stock = np.arange(n) < round(n * STOCK_SHARE)
    years_on = np.clip(rng.gamma(1.3, 3.5, n), 0, 25)
    entry = period_start + np.floor(rng.random(n) * (extract - period_start + 1))
    mstart = np.where(stock, period_start - 1 - np.floor(years_on * YEAR_DAYS), entry)
    mstart = mstart.astype(np.int64)
    obs_start = np.maximum(mstart, period_start)  # first day inside the study period
    index_day = np.maximum(go_live, mstart)  # the cohort's index date
    age_at_start = np.clip(np.round(18 + rng.gamma(2.0, 11.0, n)), 18, 80).astype(np.int64)
    birth_year = np.maximum(_year(mstart) - age_at_start, _year(index_day) - 85)

    sex = rng.choice(4, n, p=[0.968, 0.028, 0.002, 0.002])  # in the schema's enum order
    ethnicity = rng.choice(6, n, p=[0.06, 0.04, 0.025, 0.835, 0.015, 0.025])
    offence = rng.choice(6, n, p=[0.24, 0.30, 0.08, 0.26, 0.08, 0.04])
    contact_offence = offence < 2  # contact_adult, contact_child
    risk_latent = risk_shift + 0.25 * contact_offence + rng.normal(0, 1, n)
    level = np.searchsorted([-0.1, 0.85, 1.85], risk_latent)  # 0 low .. 3 very_high
    prior_mean = 1.6 * np.exp(0.35 * risk_latent)
    priors = rng.poisson(rng.gamma(1.2, prior_mean / 1.2))
    prior_sexual = rng.binomial(priors, 0.22 + 0.1 * contact_offence)
    risk_factors = rng.binomial(7, np.array([0.12, 0.22, 0.35, 0.5])[level])
    protective = rng.binomial(4, np.array([0.65, 0.5, 0.4, 0.3])[level])
    static = np.clip(level + rng.choice([-1, 0, 0, 0, 0, 0, 1], n), 0, 3)
    static = np.where(rng.random(n) < 0.08, len(RISK_LEVELS), static)  # sometimes missing
    mappa_category = rng.choice([1, 2, 3], n, p=[0.96, 0.03, 0.01])
    u = rng.random(n)
    level3 = np.array([0.0, 0.002, 0.01, 0.06])[level]
    level2 = level3 + np.array([0.02, 0.05, 0.15, 0.35])[level]
    mappa_level = np.where(u < level3, 3, np.where(u < level2, 2, 1))
    on_licence = rng.random(n) < _logistic(
        np.where(stock, -1.1, 0.0) + 0.3 * (risk_latent - risk_shift)
    )

    kind = rng.random(n)
    notify_lag = np.where(
        ~stock & (kind < 0.12),  # transferred in: notified years before
        np.floor(rng.uniform(1, 8, n) * YEAR_DAYS),
        np.where(kind > 0.97, -np.floor(rng.uniform(1, 31, n)), np.floor(rng.uniform(0, 91, n))),
    )
    notification_start = np.minimum(mstart - notify_lag.astype(np.int64), extract)
    finite = rng.random(n) < np.where(level >= 2, 0.25, 0.45)  # else indefinite
    notification_end = obs_start + np.floor(rng.uniform(0.1, 12, n) * YEAR_DAYS).astype(np.int64)

    # Competing exits from obs_start: died (by age), transferred out, removed, other; and the
    # end of notification. Custody follows proven events (below).
    age_obs = _year(obs_start) - birth_year
    exit_rate = np.column_stack(
        [
            0.003 * np.exp(0.075 * (age_obs - 50)),
            np.full(n, TRANSFER_OUT_RATE),
            np.full(n, REMOVED_RATE),
            np.full(n, OTHER_EXIT_RATE),
        ]
    )
    exit_years = np.minimum(rng.exponential(1 / exit_rate), 1000.0)
    exit_day = obs_start[:, None] + np.floor(exit_years * YEAR_DAYS).astype(np.int64)
    exit_reason = np.array(
        [
            END_REASONS.index(r)
            for r in ("died", "transferred_out", "removed_from_register", "other")
        ]
    )
    first_exit = exit_day.argmin(axis=1)
    natural_end = exit_day[np.arange(n), first_exit]
    natural_reason = exit_reason[first_exit]
    by_notification = finite & (notification_end < natural_end)
    natural_end = np.where(by_notification, notification_end, natural_end)
    natural_reason = np.where(
        by_notification, END_REASONS.index("notification_ended"), natural_reason
    )
    natural_ends = natural_end <= extract

    # The one linear predictor shared by every event type.
    x = {
        "age": (_year(index_day) - birth_year).astype(float),
        "male": (sex == 0).astype(float),
        "prior_convictions": priors.astype(float),
        "prior_sexual_convictions": prior_sexual.astype(float),
        "risk_level_score": level.astype(float),
        "risk_factors": risk_factors.astype(float),
        "protective_factors": protective.astype(float),
        "contact_offence": contact_offence.astype(float),
        "on_licence": on_licence.astype(float),
    }
    lp = (
        LOG_HAZARD_OFFSET
        + frailty
        + sum(LOG_HAZARD[k] * (x[k] - LOG_HAZARD_CENTRE[k]) for k in LOG_HAZARD)
    )

    # --- events; custody at the first custodial disposal ends management ---
    natural_last = np.where(natural_ends, natural_end, extract)
    ev_person, ev_day, ev_type, proven, disposal, custodial = _simulate_events(
        rng, obs_start, natural_last, extract, go_live, pilot, lp, type_hr
    )
    custody_day = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(custody_day, ev_person[custodial], disposal[custodial])
    custody = custody_day < np.where(natural_ends, natural_end, extract + 1)
    ended = natural_ends | custody
    mend = np.where(custody, custody_day, natural_end)
    end_reason = np.where(custody, END_REASONS.index("custody"), natural_reason)
    last_day = np.where(ended, mend, extract)  # last day of management inside the extract
    keep = ev_day <= last_day[ev_person]
    ev_person, ev_day, ev_type = ev_person[keep], ev_day[keep], ev_type[keep]
    proven, disposal = proven[keep], disposal[keep]

    # --- reviews: assessments about yearly from management start, circumstances alongside ---
    n_slots = math.ceil((extract - period_start + 366) / 300) + 1
    first = np.where(
        stock, np.maximum(mstart, period_start - np.floor(rng.random(n) * 365)), mstart
    ).astype(np.int64)
    gaps = np.clip(np.round(rng.normal(365, 25, (n, n_slots - 1))), 300, 430).astype(np.int64)
    review = first[:, None] + np.concatenate([np.zeros((n, 1), np.int64), gaps.cumsum(1)], 1)
    valid = review <= last_day[:, None]
    # Values stay as at baseline until a year after the index date (so never before go-live
    # + 1 year); from then on, step-downs and protective gains, likelier in pilot forces.
    changeable = valid & (review >= index_day[:, None] + 365)
    log_or = math.log(cfg.synthetic.risk_step_down_odds_ratio) if pilot else 0.0
    step_down = changeable & (rng.random(review.shape) < _logistic(STEP_DOWN_LOGIT + log_or))
    gain = changeable & (rng.random(review.shape) < _logistic(PROTECTIVE_GAIN_LOGIT + log_or))
    downs = step_down.cumsum(1)
    level_now = np.maximum(level[:, None] - downs, 0)
    risk_factors_now = np.maximum(risk_factors[:, None] - downs, 0)
    protective_now = np.minimum(protective[:, None] + gain.cumsum(1), 4)
    r_person, r_slot = np.nonzero(valid)
    r_day = review[r_person, r_slot]
    circumstances = _simulate_circumstances(
        rng, cfg, pilot, x, stock, r_person, r_day > index_day[r_person]
    )

    # --- contacts between reviews, at the risk level then current ---
    next_review = np.concatenate([review[:, 1:], np.full((n, 1), 10**9)], 1)
    c_from = np.maximum(review, obs_start[:, None])
    c_len = np.where(
        valid, np.clip(np.minimum(next_review, last_day[:, None] + 1) - c_from, 0, None), 0
    )
    counts = rng.poisson(CONTACT_RATE[level_now] * contact_intensity * c_len / MONTH_DAYS)
    cell = np.repeat(np.arange(counts.size), counts.ravel())
    c_person, c_slot = cell // n_slots, cell % n_slots
    c_day = c_from[c_person, c_slot] + np.floor(
        rng.random(len(cell)) * c_len[c_person, c_slot]
    ).astype(np.int64)
    contacts = _simulate_contacts(
        rng,
        n,
        pilot,
        go_live,
        period_start,
        extract,
        dmp_level,
        c_person,
        c_day,
        level_now[c_person, c_slot],
    )

    # --- tables, ordered by pseudonym then date, with sequential row ids ---
    person_id = _pseudonyms(rng, n, PERSON_ID_LENGTH)
    order = np.argsort(person_id)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    pid = pl.Series(person_id)

    people = _frame(
        "people",
        {
            "person_id": pid,
            "sex": _choose(_enum("people", "sex"), sex),
            "birth_year": birth_year,
            "ethnicity": _choose(_enum("people", "ethnicity"), ethnicity),
            "index_offence": _choose(_enum("people", "index_offence"), offence),
            "prior_convictions": priors,
            "prior_sexual_convictions": prior_sexual,
            "static_risk": _choose(RISK_LEVELS, static),
            "mappa_category": mappa_category,
            "mappa_level": mappa_level,
            "notification_start": _dates(notification_start),
            "notification_end": _dates(notification_end, missing=~finite),
            "management_start": _dates(mstart),
            "management_end": _dates(mend, missing=~ended),
            "management_end_reason": _choose(
                END_REASONS, np.where(ended, end_reason, len(END_REASONS))
            ),
            "on_licence": on_licence,
        },
    ).select(pl.all().gather(order))

    o = np.lexsort((r_day, rank[r_person]))
    assessments = _frame(
        "assessments",
        {
            "assessment_id": _row_ids("AS", len(o)),
            "person_id": pid.gather(r_person[o]),
            "assessment_date": _dates(r_day[o]),
            "risk_level": _choose(RISK_LEVELS, level_now[r_person, r_slot][o]),
            "risk_factors": risk_factors_now[r_person, r_slot][o],
            "protective_factors": protective_now[r_person, r_slot][o],
        },
    )
    circumstances_frame = _frame(
        "circumstances",
        {"person_id": pid.gather(r_person[o]), "record_date": _dates(r_day[o])}
        | {k: v.gather(o) for k, v in circumstances.items()},
    )
    o = np.lexsort((ev_type, ev_day, rank[ev_person]))
    events = _frame(
        "events",
        {
            "event_id": _row_ids("EV", len(o)),
            "person_id": pid.gather(ev_person[o]),
            "event_date": _dates(ev_day[o]),
            "event_type": _choose(EVENT_TYPES, ev_type[o]),
            "proven": proven[o],
            "disposal_date": _dates(disposal[o], missing=~proven[o]),
        },
    )
    o = np.lexsort((c_day, rank[c_person]))
    contacts_frame = _frame(
        "contacts",
        {
            "contact_id": _row_ids("CT", len(o)),
            "person_id": pid.gather(c_person[o]),
            "contact_date": _dates(c_day[o]),
        }
        | {k: v.gather(o) for k, v in contacts.items()},
    )

    tables = {
        "people": people,
        "assessments": assessments,
        "contacts": contacts_frame,
        "events": events,
        "circumstances": circumstances_frame,
    }
    info = {
        "arm": force.arm,
        "go_live": force.go_live.isoformat(),
        "caseload_at_scale_1": caseload,
        "people": n,
        "contacts": contacts_frame.height,
        "events": events.height,
        "assessments": assessments.height,
        "frailty_log_hazard": round(frailty, 6),
        "risk_shift": round(risk_shift, 6),
        "contact_intensity": round(contact_intensity, 6),
        "dmp_fidelity": round(dmp_level, 6),
    }
    return tables, info


def _enum(table: str, column: str) -> tuple:
    return next(c.enum for c in TABLE_COLUMNS[table] if c.name == column)


def _row_ids(prefix: str, n: int) -> pl.Series:
    return pl.select(
        (pl.lit(prefix) + pl.int_range(1, n + 1, dtype=pl.Int64).cast(pl.String)).alias("id")
    ).to_series()


def _simulate_events(
    rng: np.random.Generator,
    obs_start: np.ndarray,
    last_day: np.ndarray,
    extract: int,
    go_live: int,
    pilot: bool,
    lp: np.ndarray,
    type_hr: dict[str, float],
) -> tuple[np.ndarray, ...]:
    """Poisson events of every type over each person's [obs_start, last_day], with the pilot
    hazard ratios from go-live. Returns person, day, type index, proven, disposal day and
    whether a proven event leads to custody at its disposal."""
    n, k = len(lp), len(EVENT_TYPES)
    models = list(EVENT_MODEL.values())
    stop = last_day + 1
    pre_len = np.clip(np.minimum(go_live, stop) - obs_start, 0, None)
    post_from = np.maximum(go_live, obs_start)
    post_len = np.clip(stop - post_from, 0, None)
    rate = np.array([m.proven_rate / m.p_proven for m in models]) / YEAR_DAYS
    hr = np.array([type_hr[t] for t in EVENT_TYPES]) if pilot else np.ones(k)
    risk = np.exp(lp)[:, None] * rate[None, :]
    mu = np.concatenate([risk * pre_len[:, None], risk * hr * post_len[:, None]], axis=1)
    cell = np.repeat(np.arange(n * 2 * k), rng.poisson(mu).ravel())
    person, col = cell // (2 * k), cell % (2 * k)
    etype, post = col % k, col >= k
    start = np.where(post, post_from[person], obs_start[person])
    length = np.where(post, post_len[person], pre_len[person])
    day = start + np.floor(rng.random(len(cell)) * length).astype(np.int64)

    median = np.array([m.lag_median_days for m in models])[etype]
    log_sd = np.array([m.lag_log_sd for m in models])[etype]
    disposal = day + np.floor(median * np.exp(log_sd * rng.normal(0, 1, len(cell)))).astype(
        np.int64
    )
    p_proven = np.array([m.p_proven for m in models])[etype]
    # Not proven by the extract date when the disposal would come later.
    proven = (rng.random(len(cell)) < p_proven) & (disposal <= extract)
    p_custody = np.array([m.p_custody for m in models])[etype]
    custodial = proven & (rng.random(len(cell)) < p_custody)
    return person, day, etype, proven, disposal, custodial


def _simulate_circumstances(
    rng: np.random.Generator,
    cfg: StudyConfig,
    pilot: bool,
    x: dict[str, np.ndarray],
    stock: np.ndarray,
    person: np.ndarray,
    after_index: np.ndarray,
) -> dict[str, pl.Series]:
    """Circumstances at each review (rows given by `person`): the baseline value up to the
    index date, then draws from CIRCUMSTANCE_MODEL with the pilot odds ratios."""
    n = len(stock)
    age = x["age"]
    age10 = (age - 45) / 10
    rs, pf, lic = x["risk_level_score"], x["protective_factors"], x["on_licence"]
    baseline_logit = {
        "employed": 0.2 - 0.5 * age10 - 0.3 * rs + 0.2 * (pf - 2) - 0.3 * lic - 3.0 * (age >= 67),
        "settled_accommodation": 2.0 - 0.2 * rs - 1.0 * (lic * ~stock),
        "positive_relationship": np.full(n, 0.0),
        "community_activity": np.full(n, -1.1),
        "mental_health_support": np.full(n, -1.4),
    }
    covariates = np.column_stack([age10, rs, pf, lic])
    value: dict[str, np.ndarray] = {}
    for name, coef in CIRCUMSTANCE_MODEL.items():
        base = rng.random(n) < _logistic(baseline_logit[name])
        log_or = math.log(cfg.synthetic.odds_ratio_12m.get(name, 1.0)) if pilot else 0.0
        logit = coef[0] + coef[1] * base + covariates @ np.array(coef[2:]) + log_or
        later = rng.random(len(person)) < _logistic(logit[person])
        value[name] = np.where(after_index, later, base[person])

    m = len(person)
    # employment: employed, unemployed, unable_to_work, retired, unknown
    retired = (age[person] >= 65) & (rng.random(n)[person] < 0.85)
    unable = rng.random(n)[person] < 0.22
    not_employed = np.where(retired, 3, np.where(unable, 2, 1))
    unknown = rng.random(m) < 0.03
    emp = np.where(value["employed"], 0, np.where(unknown, 4, not_employed))
    # accommodation: settled, unsettled, homeless, approved_premises, unknown
    u = rng.random(n)
    p_ap = np.where(lic > 0, 0.45, 0.05)
    not_settled = np.where(u < p_ap, 3, np.where(u < p_ap + 0.15, 2, 1))[person]
    unknown = rng.random(m) < 0.04
    acc = np.where(value["settled_accommodation"], 0, np.where(unknown, 4, not_settled))

    out = {
        "employment": _choose(_enum("circumstances", "employment"), emp),
        "accommodation": _choose(_enum("circumstances", "accommodation"), acc),
    }
    for name in ("positive_relationship", "community_activity", "mental_health_support"):
        missing = rng.random(m) < OPTIONAL_MISSING
        out[name] = pl.Series(np.where(missing, np.nan, value[name]), nan_to_null=True).cast(
            pl.Boolean
        )
    return out


def _simulate_contacts(
    rng: np.random.Generator,
    n: int,
    pilot: bool,
    go_live: int,
    period_start: int,
    extract: int,
    dmp_level: float,
    person: np.ndarray,
    day: np.ndarray,
    level: np.ndarray,
) -> dict[str, pl.Series]:
    """Contact attributes: officer (a main officer per person), training, DMP use, goals,
    referral, type and duration."""
    m = len(person)
    n_officers = max(2, round(n / 40))
    officer_ids = pl.Series(_pseudonyms(rng, n_officers, OFFICER_ID_LENGTH))
    if pilot:  # trained from shortly before go-live over the first year; a few never
        trained_from = go_live + np.floor(rng.uniform(-60, 365, n_officers))
        trained_from = np.where(rng.random(n_officers) < 0.9, trained_from, np.inf)
    else:  # a few officers trained elsewhere
        trained_from = period_start + np.floor(rng.random(n_officers) * (extract - period_start))
        trained_from = np.where(rng.random(n_officers) < 0.03, trained_from, np.inf)
    main = rng.integers(0, n_officers, n)
    officer = np.where(rng.random(m) < 0.85, main[person], rng.integers(0, n_officers, m))
    ramp = np.clip((day - go_live + 1) / 365, 0, 1) if pilot else np.zeros(m)
    dmp = rng.random(m) < dmp_level * ramp
    goals = np.where(dmp, rng.poisson(1.4, m), rng.poisson(0.15, m))
    referral = np.where(
        rng.random(m) < np.where(dmp, 0.7, 0.9),
        0,
        1 + rng.choice(len(REFERRAL_KIND_P), m, p=REFERRAL_KIND_P),
    )
    ctype = _categorical(rng, CONTACT_TYPE_P[level])
    minutes = CONTACT_MEDIAN_MINUTES[ctype] * np.exp(0.45 * rng.normal(0, 1, m)) + 10 * dmp
    return {
        "contact_type": _choose(CONTACT_TYPES, ctype),
        "officer_id": officer_ids.gather(officer),
        "officer_trained": pl.Series(day >= trained_from[officer]),
        "dmp_reviewed": pl.Series(dmp),
        "goals_agreed": pl.Series(goals),
        "referral": _choose(REFERRALS, referral),
        "duration_minutes": pl.Series(np.clip(np.round(minutes), 1, 600).astype(np.int64)),
    }


# --- writing deliveries ------------------------------------------------------------------


def _render(df: pl.DataFrame, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "csv":
        df.write_csv(buf)
    else:
        df.write_parquet(buf)
    return buf.getvalue()


def _json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def _delivery_files(
    tables: dict[str, pl.DataFrame], cfg: StudyConfig, code: str, fmt: str
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    listed = {}
    for name in TABLES:
        data = _render(tables[name], fmt)
        files[f"{name}.{fmt}"] = data
        listed[f"{name}.{fmt}"] = {
            "rows": tables[name].height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "force_code": code,
        "extract_date": cfg.study.extract_date.isoformat(),
        "period_start": cfg.study.period_start.isoformat(),
        "period_end": cfg.study.extract_date.isoformat(),
        "files": listed,
    }
    return {"manifest.json": _json_bytes(manifest), **files}


def _occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _holds(folder: Path, files: dict[str, bytes]) -> bool:
    """Whether `folder` holds exactly these files with these bytes."""
    if not folder.is_dir():
        return False
    present = {p.name for p in folder.iterdir()}
    return present == set(files) and all(
        (folder / name).read_bytes() == data for name, data in files.items()
    )


def write_study(
    study: SyntheticStudy, cfg: StudyConfig, drop: Path, fmt: str = "csv"
) -> list[Path]:
    """Write one delivery per force, `<drop>/<force>/<extract_date>/` with manifest.json and
    the five tables (CSV or Parquet), and `<drop>/truth.json`; return the delivery folders.

    A delivery folder that already exists is left alone when it holds exactly the same files
    (delivering the same content twice is a no-op) and refused with FileExistsError when it
    holds anything else; nothing is written unless every folder passes. Each folder is written
    under a hidden name and renamed into place, so a half-written delivery is never seen.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    drop = Path(drop)
    extract = cfg.study.extract_date.isoformat()
    planned = {
        drop / code / extract: _delivery_files(tables, cfg, code, fmt)
        for code, tables in study.tables.items()
    }
    truth_path, truth = drop / "truth.json", _json_bytes(study.truth)
    for folder, files in planned.items():
        if _occupied(folder) and not _holds(folder, files):
            raise FileExistsError(
                f"{folder}: a delivery with different content is already there; "
                "deliveries are never overwritten (write to an empty drop folder)"
            )
    if truth_path.exists() and truth_path.read_bytes() != truth:
        raise FileExistsError(
            f"{truth_path}: holds the truth of a different synthetic study; "
            "write to an empty drop folder"
        )
    for folder, files in planned.items():
        if _occupied(folder):
            continue  # the same content is already delivered
        partial = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name, data in files.items():
            (partial / name).write_bytes(data)
        os.replace(partial, folder)
    partial_truth = drop / ".truth.json.partial"
    partial_truth.write_bytes(truth)
    os.replace(partial_truth, truth_path)
    return list(planned)
