"""Sensitivity analyses (analysis-plan.md analysis 10, plan 1.1): E-values for the hazard
ratio and relative-magnitude bounds for the difference-in-differences, as plain functions.

The pipeline calls them from the core: ``survival_models.survival_estimates`` writes the
``e_value`` rows and ``did.did_estimates`` the ``honest_did`` rows (with the placebo go-live,
``did.placebo_go_live``); the leave-one-force-out estimates are the jackknife's refits
(``survival_models.few_cluster_inference``), reused, not refitted.

**E-values** (VanderWeele & Ding 2017): the minimum strength of association, on the risk
ratio scale, that an unmeasured confounder would need with both the treatment and the
outcome to explain the observed risk ratio RR away: E = RR + sqrt(RR (RR - 1)) for RR >= 1,
and the same of 1 / RR for RR < 1. For the confidence interval, the same formula applied to
the limit nearer 1, or 1 if the interval includes 1. A hazard ratio is a risk ratio only for
a rare outcome; an outcome whose cumulative incidence at the horizon exceeds 15 % in either
arm (or is not known there) is common, and its hazard ratio (and limits) are first converted
with VanderWeele's (2020) approximation RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)).

**Relative-magnitude bounds** (after Rambachan & Roth 2023, "relative magnitudes"). The
estimator compares each month with the mean of the months before go-live, so a pre-period
event-study coefficient beta_e (e < 0) *is* the violation of parallel trends in month e,
measured from that baseline. The restriction implemented is on levels of the violation: in
every post-go-live cell the violation delta satisfies |delta| <= Mbar * D, with
D = max_{e<0} |beta_e| over the event-study window. Any average of post-go-live cells (the
simple ATT is one) then has the identified set [ATT - Mbar D, ATT + Mbar D], and the 95 %
interval used is the sampling interval of the ATT widened by Mbar D on each side (the union,
over the identified set, of the interval shifted by each admissible bias), which treats D as
known. The breakdown Mbar is the smallest Mbar at which that interval includes 0 (0 when the
sampling interval already does). This is *not* the R HonestDiD package: HonestDiD's Delta^RM
bounds the month-to-month *changes* of the violation after go-live by Mbar times the largest
change before it (normalised to the month before go-live), and forms its confidence set by
conditional/hybrid inference that allows for the estimation of D. Here the pre-period noise
of monthly coefficients inflates D (so the bounds are conservative), and no sampling
uncertainty in D is allowed for (so they are optimistic about it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

COMMON_INCIDENCE = 0.15  # cumulative incidence at the horizon above which an outcome is common
MBARS = (0.0, 0.5, 1.0, 2.0)  # relative magnitudes reported (analysis plan 10)
PLACEBO_MONTHS = 12  # the placebo go-live: this many months before the real one


def mbar_term(mbar: float) -> str:
    """The results.json term of the bounds at `mbar`: "mbar_0", "mbar_0.5", "mbar_1", ..."""
    return f"mbar_{mbar:g}"


# --------------------------------------------------------------------------------------------
# E-values
# --------------------------------------------------------------------------------------------


def e_value_rr(rr: float) -> float:
    """The E-value of a risk ratio (VanderWeele & Ding 2017): RR + sqrt(RR (RR - 1)) on the
    side of RR away from 1 (1 / RR for a protective ratio); 1 for RR = 1."""
    if not (math.isfinite(rr) and rr > 0):
        raise ValueError(f"a risk ratio must be positive and finite, not {rr}")
    r = rr if rr >= 1 else 1 / rr
    return r + math.sqrt(r * (r - 1))


def hr_to_rr(hr: float) -> float:
    """VanderWeele's (2020) approximate risk ratio for the hazard ratio of a common outcome:
    (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)). Limits 0 and infinity map to themselves."""
    if hr == 0 or hr == math.inf:
        return hr
    return (1 - 0.5 ** math.sqrt(hr)) / (1 - 0.5 ** math.sqrt(1 / hr))


@dataclass(frozen=True)
class EValue:
    """E-values of one hazard ratio. `common`: the hazard ratio was converted to a risk ratio
    first. `e_value_ci` is for the interval limit nearer 1 (1 when the interval includes 1);
    None when the interval has no limits at all."""

    hr: float
    rr: float
    rr_ci_low: float | None
    rr_ci_high: float | None
    common: bool
    e_value: float
    e_value_ci: float | None


def is_common(incidences: Sequence[float | None]) -> bool:
    """Common outcome: cumulative incidence at the horizon over 15 % in any arm, or not known
    in one (then the conversion, which moves the ratio towards 1, is the cautious choice)."""
    return any(x is None or not math.isfinite(x) or x > COMMON_INCIDENCE for x in incidences)


def e_values(hr: float, ci_low: float | None, ci_high: float | None, common: bool) -> EValue:
    """E-values of a hazard ratio and its interval (limits None: unbounded on that side)."""
    conv = hr_to_rr if common else (lambda x: x)
    rr = conv(hr)
    if ci_low is None and ci_high is None:
        return EValue(hr, rr, None, None, common, e_value_rr(rr), None)
    lo = conv(ci_low if ci_low is not None else 0.0)
    hi = conv(ci_high if ci_high is not None else math.inf)
    e_ci = 1.0 if lo <= 1 <= hi else e_value_rr(lo if lo > 1 else hi)
    return EValue(
        hr,
        rr,
        lo if ci_low is not None else None,
        hi if ci_high is not None else None,
        common,
        e_value_rr(rr),
        e_ci,
    )


# --------------------------------------------------------------------------------------------
# Relative-magnitude bounds for the difference in differences
# --------------------------------------------------------------------------------------------


def largest_pre_violation(pre_coefficients: Sequence[float]) -> float:
    """D: the largest |pre-go-live event-study coefficient| (NaN ones ignored); NaN if none."""
    pre = np.asarray(pre_coefficients, dtype=float)
    pre = pre[np.isfinite(pre)]
    return float(np.max(np.abs(pre))) if pre.size else float("nan")


def relative_magnitude_bounds(
    estimate: float,
    ci_low: float,
    ci_high: float,
    pre_coefficients: Sequence[float],
    mbars: Sequence[float] = MBARS,
) -> pd.DataFrame:
    """The bounds of the module docstring, one row per Mbar: mbar, largest_pre_violation (D),
    bound_low, bound_high (identified set ATT -/+ Mbar D), ci_low, ci_high (the sampling
    interval widened by Mbar D), includes_zero."""
    d = largest_pre_violation(pre_coefficients)
    rows = []
    for m in mbars:
        lo, hi = ci_low - m * d, ci_high + m * d
        rows.append(
            {
                "mbar": float(m),
                "largest_pre_violation": d,
                "bound_low": estimate - m * d,
                "bound_high": estimate + m * d,
                "ci_low": lo,
                "ci_high": hi,
                "includes_zero": bool(lo <= 0 <= hi),
            }
        )
    return pd.DataFrame(rows)


def breakdown_mbar(ci_low: float, ci_high: float, largest_violation: float) -> float:
    """The smallest Mbar at which the widened interval includes 0: 0 if the sampling interval
    already does, infinity if there was no pre-period violation at all (D = 0)."""
    if ci_low <= 0 <= ci_high:
        return 0.0
    if largest_violation == 0:
        return math.inf
    return (ci_low if ci_low > 0 else -ci_high) / largest_violation
