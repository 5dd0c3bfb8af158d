"""Study configuration: one YAML file per study, validated on load.

`load_config(path)` returns a `StudyConfig`; a wrong key or value raises `ConfigError` with
the file and the key path, so a person can fix it without reading a traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

OUTCOMES: tuple[str, ...] = ("sexual_reoffence", "any_reoffence", "breach", "any_adverse")

# Covariates the cohort builder knows how to derive (see evaluation.cohort).
KNOWN_COVARIATES: tuple[str, ...] = (
    "age",
    "male",
    "prior_convictions",
    "prior_sexual_convictions",
    "risk_level_score",
    "risk_factors",
    "protective_factors",
    "contact_offence",
    "on_licence",
    "mappa_level",
)


class ConfigError(ValueError):
    """A study configuration that cannot be used; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Study(_Strict):
    name: str
    period_start: dt.date
    data_cutoff: dt.date
    extract_date: dt.date

    @model_validator(mode="after")
    def _dates_in_order(self) -> Study:
        if not self.period_start < self.data_cutoff <= self.extract_date:
            raise ValueError("need period_start < data_cutoff <= extract_date")
        return self


class MinimumForces(_Strict):
    """Forces of each arm that need a current, valid delivery for an evaluation to stand
    (analysis plan 1.1, "Minimum data for an evaluation")."""

    pilot: int = Field(3, ge=1)
    comparison: int = Field(3, ge=1)


class LogRank(_Strict):
    """The log-rank test beside the Cox model (R `survdiff`): `rho` 0 is the log-rank test,
    1 the Peto-Peto weighting (Fleming-Harrington G-rho); `stratify_by_force` compares the
    arms within forces."""

    rho: float = Field(0.0, ge=0)
    stratify_by_force: bool = False


class Analysis(_Strict):
    primary_outcome: Literal["sexual_reoffence", "any_reoffence", "breach", "any_adverse"] = (
        "any_reoffence"
    )
    entry_window_days: int = Field(365, ge=0)
    follow_up_days: int = Field(730, gt=0)
    waiting_period_days: int = Field(180, ge=0)
    horizon_days: int = Field(730, gt=0)
    covariates: tuple[str, ...] = KNOWN_COVARIATES[:-1]
    weighting: Literal["none", "iptw_att", "iptw_ate", "overlap"] = "iptw_att"
    weight_truncation: tuple[float, float] = (1.0, 99.0)
    cluster_inference: Literal["permutation", "wild_bootstrap"] = "permutation"
    permutations: int = Field(999, ge=19)  # draws when there are more assignments than
    exact_permutation_limit: int = Field(20_000, ge=1)  # this: up to it, every one is used
    ties: Literal["efron", "breslow"] = "efron"  # tied event times in the Cox models
    logrank: LogRank = LogRank()
    # GEE working correlation within force: independence is the primary analysis (always a
    # valid working covariance); exchangeable, kept valid, is reported as a sensitivity.
    gee_correlation: Literal["independence", "exchangeable"] = "independence"
    bootstrap_reps: int = Field(999, ge=19)
    seed: int = 20260930
    minimum_forces: MinimumForces = MinimumForces()

    @model_validator(mode="after")
    def _check(self) -> Analysis:
        unknown = sorted(set(self.covariates) - set(KNOWN_COVARIATES))
        if unknown:
            raise ValueError(f"unknown covariates {unknown}; known: {', '.join(KNOWN_COVARIATES)}")
        lo, hi = self.weight_truncation
        if not 0 <= lo < hi <= 100:
            raise ValueError("weight_truncation must be two percentiles 0 <= low < high <= 100")
        return self


class Monitoring(_Strict):
    """Planned interim analyses (analysis plan 1.1, analysis 11): the information fractions
    of the looks, as shares of the primary outcome events expected at the final analysis."""

    looks: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    expected_events: int = Field(gt=0)
    final_analysis: dt.date
    alpha: float = Field(0.025, gt=0, lt=0.5)  # one-sided

    @model_validator(mode="after")
    def _check(self) -> Monitoring:
        f = self.looks
        if not f or any(not 0 < x <= 1 for x in f) or list(f) != sorted(set(f)) or f[-1] != 1:
            raise ValueError("looks must be increasing fractions in (0, 1] ending at 1")
        return self


class Design(_Strict):
    """The grid of the pilot design planner (`dpf-eval plan`, evaluation.design): every
    combination of these values is a cell whose power is estimated by simulating `reps`
    whole pilots and running the headline analysis on each. `heterogeneity_sd` (between-force
    SD of the log hazard) None: the one estimated from the current run, else the generator's."""

    pilot_forces: tuple[int, ...] = (5, 10)
    comparison_forces: tuple[int, ...] = (8,)
    follow_up_days: tuple[int, ...] = (730,)
    hazard_ratio: tuple[float, ...] = (1.0, 0.85)
    heterogeneity_sd: tuple[float, ...] | None = None
    entry_window_days: int | None = Field(None, ge=0)  # None: analysis.entry_window_days
    go_live_spread_days: int = Field(365, ge=0)  # pilot go-lives evenly over this span
    scale: float = Field(1.0, gt=0)  # multiplies the simulated forces' caseloads
    reps: int = Field(200, ge=1)
    seed: int = Field(20261207, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Design:
        grid = {
            "pilot_forces": self.pilot_forces,
            "comparison_forces": self.comparison_forces,
            "follow_up_days": self.follow_up_days,
            "hazard_ratio": self.hazard_ratio,
        }
        for name, values in grid.items():
            if not values or min(values) <= 0:
                raise ValueError(f"{name} must list at least one positive value")
        if self.heterogeneity_sd is not None and (
            not self.heterogeneity_sd or min(self.heterogeneity_sd) < 0
        ):
            raise ValueError("heterogeneity_sd must list SDs >= 0 (or be left out)")
        return self


class Disclosure(_Strict):
    min_cell: int = Field(10, ge=1)
    round_to: int = Field(5, ge=1)


class Publish(_Strict):
    # Print each page as an A4 PDF with headless Chromium (where it is installed) beside the
    # HTML in each edition; the tests' fast config turns it off for runs that need no PDF.
    pdf: bool = True


class Limits(_Strict):
    """Size limits on what a delivery may hold (extract-spec 1.1, "Files, sizes and
    revisions"). Each is checked before the thing it limits is read."""

    manifest_bytes: int = Field(1_000_000, gt=0)  # manifest.json
    table_bytes: int = Field(2_000_000_000, gt=0)  # one table file, CSV or Parquet
    parquet_decoded_bytes: int = Field(4_000_000_000, gt=0)  # from Parquet metadata
    value_chars: int = Field(256, gt=0)  # any single value (identifiers: 8-64)


class Language(_Strict):
    # The terms themselves live in each study's config file, the one place that names them.
    avoid: tuple[str, ...] = Field(min_length=1)


EMAIL = re.compile(r"[^@\s]+@[^@\s]+")  # enough to catch a name or a typo, not RFC 5322


class Notify(_Strict):
    """Who is emailed when a run fails or is refused (pipelines/notify.py), and through which
    SMTP server. Off unless enabled. The password is never in this file (it is committed with
    the study): `password_env` names the environment variable that holds it."""

    enabled: bool = False
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True  # upgrade to TLS before logging in or sending
    username: str = ""
    password_env: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    sender: str = ""
    recipients: tuple[str, ...] = ()
    ui_url: str = "http://127.0.0.1:3000"  # where the email's link to the run points

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: object) -> object:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("no password here: name an environment variable in password_env")
        return data

    @model_validator(mode="after")
    def _check(self) -> Notify:
        bad = [a for a in (self.sender, *self.recipients) if a and not EMAIL.fullmatch(a)]
        if bad:
            raise ValueError(f"sender and recipients must be email addresses; not: {bad}")
        if self.enabled and not (self.smtp_host and self.sender and self.recipients):
            raise ValueError("enabled needs smtp_host, sender and at least one recipient")
        if self.username and not self.password_env:
            raise ValueError("username needs password_env (the variable holding the password)")
        return self


class Synthetic(_Strict):
    """True effects the synthetic generator builds in (ignored for real data)."""

    hazard_ratio: dict[str, float] = Field(
        default_factory=lambda: {
            "sexual_reoffence": 0.85,
            "any_reoffence": 0.85,
            "breach": 0.75,
            "any_adverse": 0.85,
        }
    )
    odds_ratio_12m: dict[str, float] = Field(
        default_factory=lambda: {"employed": 1.3, "settled_accommodation": 1.3}
    )
    risk_step_down_odds_ratio: float = Field(1.4, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Synthetic:
        unknown = set(self.hazard_ratio) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"hazard_ratio has unknown outcomes {sorted(unknown)}")
        if any(v <= 0 for v in self.hazard_ratio.values()):
            raise ValueError("hazard ratios must be positive")
        return self


class Force(_Strict):
    code: str = Field(pattern=r"^[A-Z0-9]{2,8}$")
    name: str
    arm: Literal["pilot", "comparison"]
    go_live: dt.date


class StudyConfig(_Strict):
    study: Study
    analysis: Analysis = Analysis()
    disclosure: Disclosure = Disclosure()
    limits: Limits = Limits()
    language: Language
    synthetic: Synthetic = Synthetic()
    notify: Notify = Notify()
    publish: Publish = Publish()
    monitoring: Monitoring | None = None  # None: no interim monitoring (one final analysis)
    design: Design = Design()  # the pilot design planner's grid (dpf-eval plan)
    forces: tuple[Force, ...]
    # Filled by load_config: the hash of the file's bytes, for results.json provenance.
    sha256: str = ""
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        codes = [f.code for f in self.forces]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"force codes must be unique; repeated: {dupes}")
        arms = {f.arm for f in self.forces}
        if arms != {"pilot", "comparison"}:
            raise ValueError("forces need at least one pilot and one comparison force")
        for f in self.forces:
            if not self.study.period_start < f.go_live < self.study.data_cutoff:
                raise ValueError(f"force {f.code}: go_live must lie inside the study period")
        # A minimum the study cannot reach would fail every evaluation: say so on load.
        minimum = self.analysis.minimum_forces
        for arm in ("pilot", "comparison"):
            have = sum(f.arm == arm for f in self.forces)
            if getattr(minimum, arm) > have:
                raise ValueError(
                    f"analysis.minimum_forces.{arm} is {getattr(minimum, arm)} but the study "
                    f"has only {have} {arm} forces"
                )
        return self

    def force(self, code: str) -> Force:
        for f in self.forces:
            if f.code == code:
                return f
        raise KeyError(code)

    @property
    def force_codes(self) -> list[str]:
        return [f.code for f in self.forces]

    @property
    def pilot_codes(self) -> list[str]:
        return [f.code for f in self.forces if f.arm == "pilot"]


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid study configuration"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        else:
            lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_config(text: str, source: str = "<config>") -> StudyConfig:
    """Parse and validate a study configuration from YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of study, analysis, forces, ...")
    raw["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    raw["source"] = source
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(Path(source), err)) from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from None
    return parse_config(text, str(path))
