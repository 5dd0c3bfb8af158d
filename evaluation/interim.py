"""Interim analyses (analysis plan 1.1, analysis 11): group-sequential monitoring of the
primary outcome over the looks actually taken.

The boundary is the Lan–DeMets O'Brien–Fleming-type alpha-spending boundary in the `sfLDOF`
convention of R gsDesign: one-sided alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t)) spent by
information fraction t. The z boundaries b_1 < ... of looks at fractions t_1 < t_2 < ... solve
P(Z_1 < b_1, ..., Z_{k-1} < b_{k-1}, Z_k >= b_k) = alpha(t_k) - alpha(t_{k-1}) under the null,
where (Z_1, Z_2, ...) are the standardised statistics of a Brownian motion observed at the
fractions (corr(Z_i, Z_j) = sqrt(t_i / t_j)). The probabilities are computed by the standard
recursive numerical integration (Armitage, McPherson & Rowe 1969) on the grid of Jennison &
Turnbull (2000, ch. 19) that gsDesign uses (r = 18): the density of Z_k on the continuation
region is carried from look to look by Simpson's rule. Harm is judged against the mirror
image, -b_k.

A look is a published evaluation whose information fraction (primary outcome events so far /
`monitoring.expected_events`, 1 once `study.data_cutoff` reaches `monitoring.final_analysis`)
exceeds the last recorded look's. The looks taken are kept in restricted/looks.json, written
durably (whole or not at all) after the edition is published: a re-run on the same data
gives the same look, a run killed before publishing adds none, and each boundary is
recomputed from the fractions actually taken.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import rounded
from evaluation.durable import read_json_object, write_durably
from evaluation.results import Estimate

LEDGER = "looks.json"  # in restricted/
GRID_R = 18  # Jennison & Turnbull's grid size parameter (gsDesign's default)
PRIVATE_FILE = 0o600
HEADLINE_Z = NormalDist().inv_cdf(0.975)  # the headline interval is a 95 % one


# --------------------------------------------------------------------------------------------
# The spending function and the boundaries
# --------------------------------------------------------------------------------------------


def _sf(z: float) -> float:
    """1 - Phi(z), accurate in the tail, without scipy: the run summary of an unchanged drop
    reads the interim rows, and importing scipy would double its time."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def alpha_spent(t: float, alpha: float = 0.025) -> float:
    """Cumulative one-sided alpha spent at information fraction ``t`` (gsDesign sfLDOF)."""
    from scipy import stats

    if t <= 0:
        return 0.0
    return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(min(t, 1.0))))


@dataclass(frozen=True)
class Boundary:
    """One look's efficacy boundary: z (harm: -z), the one-sided p-value boundary 1 - Phi(z)
    (JSON key `nominal_p`, as the issue and gsDesign name it), and the
    cumulative alpha spent by this look."""

    fraction: float
    z: float
    p_boundary: float
    alpha_spent: float

    def as_dict(self) -> dict[str, float]:
        return {
            "fraction": self.fraction,
            "z": self.z if math.isfinite(self.z) else None,  # JSON has no infinity
            "nominal_p": self.p_boundary,
            "alpha_spent": self.alpha_spent,
        }


def check_fractions(fractions: Sequence[float]) -> None:
    """ValueError (one line) unless the fractions are increasing and in (0, 1]."""
    if not fractions:
        raise ValueError("no information fractions given")
    bad = [f for f in fractions if not (math.isfinite(f) and 0 < f <= 1)]
    if bad:
        raise ValueError(f"information fractions must lie in (0, 1]; not {bad[0]:g}")
    if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ValueError("information fractions must be strictly increasing")


def _grid(upper: float, r: int = GRID_R) -> tuple[np.ndarray, np.ndarray]:
    """Points and Simpson weights for integrating over z < ``upper`` under the null
    (Jennison & Turnbull 2000, section 19.2.1, mean 0): 6r - 1 points denser near the centre,
    those at or beyond ``upper`` replaced by it, then the midpoints added."""
    i = np.arange(1, 6 * r)
    x = np.where(
        i < r,
        -3 - 4 * np.log(r / i),
        np.where(i <= 5 * r, -3 + 3 * (i - r) / (2 * r), 3 + 4 * np.log(r / (6 * r - i))),
    )
    if math.isfinite(upper):
        x = np.append(x[x < upper], upper)
    m = len(x)
    z = np.empty(2 * m - 1)
    z[0::2] = x
    z[1::2] = (x[:-1] + x[1:]) / 2
    h = np.diff(x)
    w = np.zeros(2 * m - 1)
    w[0:-1:2] += h / 6
    w[2::2] += h / 6
    w[1::2] = 4 * h / 6
    return z, w


def boundaries(fractions: Sequence[float], alpha: float = 0.025, r: int = GRID_R) -> list[Boundary]:
    """The sfLDOF efficacy boundaries of looks at ``fractions`` (increasing, in (0, 1]).

    A look at which the spending function spends nothing representable (a tiny fraction)
    has an infinite boundary: nothing can cross it."""
    from scipy import optimize, special, stats  # only when boundaries are computed

    fractions = [float(f) for f in fractions]
    check_fractions(fractions)
    if not 0 < alpha < 0.5:
        raise ValueError("alpha must lie in (0, 0.5)")
    out: list[Boundary] = []
    z = w = dens = None  # grid and density of Z_{k-1} on its continuation region
    prev_t, prev_spent = 0.0, 0.0
    for t in fractions:
        spent = alpha_spent(t, alpha)
        target = spent - prev_spent
        if target <= 0:  # nothing representable to spend: nothing can cross
            b = math.inf
        elif dens is None:  # the first look: P(Z_1 >= b) = alpha(t_1)
            b = float(stats.norm.isf(target))
        else:
            # log P(continued to look k-1 and Z_k >= b); Z_k given Z_{k-1} = u is normal with
            # mean u sqrt(t_{k-1} / t_k) and variance (t_k - t_{k-1}) / t_k
            scale = math.sqrt((t - prev_t) / t)
            mean = z * math.sqrt(prev_t / t)
            with np.errstate(divide="ignore"):
                log_mass = np.log(w * dens)

            def excess(b: float, mean=mean, scale=scale, log_mass=log_mass, goal=target) -> float:
                log_cross = special.logsumexp(log_mass + stats.norm.logsf((b - mean) / scale))
                return float(log_cross - math.log(goal))

            b = float(optimize.brentq(excess, -10.0, 40.0, xtol=1e-10))
        out.append(Boundary(t, b, float(stats.norm.sf(b)), spent))
        # the density of Z_k on z < b_k, for the next look
        z_new, w_new = _grid(b, r)
        if dens is None:
            dens_new = stats.norm.pdf(z_new)
        else:
            dens_new = (
                (w * dens)[None, :]
                * stats.norm.pdf((z_new[:, None] - mean[None, :]) / scale)
                / scale
            ).sum(axis=1)
        z, w, dens = z_new, w_new, dens_new
        prev_t, prev_spent = t, spent
    return out


# --------------------------------------------------------------------------------------------
# The looks taken: restricted/looks.json
# --------------------------------------------------------------------------------------------


def read_looks(restricted: Path) -> list[dict[str, Any]]:
    """The looks recorded so far, oldest first (none if the ledger is missing)."""
    doc = read_json_object(Path(restricted) / LEDGER) or {}
    looks = doc.get("looks")
    return list(looks) if isinstance(looks, list) else []


@dataclass(frozen=True)
class Look:
    """The current look: number ``k`` of ``total`` (the looks taken and the planned ones still
    ahead), at information fraction ``fraction``, with the boundaries of every look taken
    (this one last). ``new``: not yet recorded in the ledger."""

    k: int
    total: int
    fraction: float
    events: int
    final: bool
    new: bool
    bounds: tuple[Boundary, ...]

    @property
    def boundary(self) -> Boundary:
        return self.bounds[-1]

    @property
    def term(self) -> str:
        return f"look_{self.k}_of_{self.total}"


def is_final(cfg: StudyConfig) -> bool:
    """The study's data reach the planned final analysis."""
    m = cfg.monitoring
    return m is not None and cfg.study.data_cutoff >= m.final_analysis


def current_look(cfg: StudyConfig, events: int, looks: Sequence[Mapping[str, Any]]) -> Look:
    """The look that an evaluation with ``events`` primary outcome events is, given the looks
    recorded: a new look when its fraction exceeds the last recorded one's; otherwise the
    last look again (the same data, or too little new information to count as a look)."""
    m = cfg.monitoring
    if m is None:
        raise ValueError("the study has no monitoring plan")
    final = is_final(cfg)
    fraction = 1.0 if final else min(events / m.expected_events, 1.0)
    taken = [float(x["fraction"]) for x in looks]
    new = not taken or fraction > taken[-1]
    fractions = [*taken, fraction] if new else taken
    k = len(fractions)
    total = k if final else k + sum(f > fractions[-1] for f in m.looks)
    bounds = boundaries(fractions, m.alpha)
    return Look(k, total, fractions[-1], events, final, new, tuple(bounds))


def record_look(restricted: Path, doc: Mapping[str, Any], cfg: StudyConfig) -> bool:
    """After an edition is published: add its look (from results.json's interim rows) to the
    ledger if it is a new one; True if it was added. Written durably, owner-only."""
    row = _interim_rows(doc.get("estimates", [])).get("information_fraction")
    if row is None or row["status"] != "ok":
        return False
    looks = read_looks(restricted)
    if looks and row["estimate"] <= float(looks[-1]["fraction"]):
        return False
    entry = {
        "look": len(looks) + 1,
        "fraction": row["estimate"],
        "events": row["events"],
        "data_cutoff": cfg.study.data_cutoff.isoformat(),
        "run": doc.get("run", {}).get("id"),
        "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps({"looks": [*looks, entry]}, indent=2) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, PRIVATE_FILE)

    write_durably(Path(restricted) / LEDGER, write)
    return True


# --------------------------------------------------------------------------------------------
# results.json rows
# --------------------------------------------------------------------------------------------


def _headline(rows: Iterable[Estimate], cfg: StudyConfig, inference: str) -> Estimate | None:
    for e in rows:
        if (e.outcome, e.method, e.term, e.inference) == (
            cfg.analysis.primary_outcome,
            "cox",
            "pilot",
            inference,
        ):
            return e
    return None


def _one_sided(
    head: Estimate, cfg: StudyConfig, inference: str, few_cluster: pd.DataFrame | None
) -> tuple[float, float]:
    """The headline's one-sided p-values (benefit: HR < 1, harm: HR > 1).

    Permutation: taken directly from the permutation distribution (``few_cluster``'s
    ``p_benefit``/``p_harm``, the shares of assignments at least as favourable / as harmful
    as observed), which need not be symmetric. Otherwise the two-sided p is halved in the
    direction of the estimate (1 minus half of it in the other). For the wild cluster
    bootstrap that rule is kept because it is exact for its distribution: the Webb weights
    are symmetric (v and -v equally likely) and t* changes sign with v, so the bootstrap
    distribution of the score t is symmetric by construction (the draws only up to Monte
    Carlo error); for a normal (cluster-robust) p it is exact too."""
    if inference == "permutation" and few_cluster is not None:
        sel = few_cluster[
            (few_cluster.outcome == cfg.analysis.primary_outcome)
            & (few_cluster.inference == "permutation")
        ]
        if len(sel) == 1 and np.isfinite(sel[["p_benefit", "p_harm"]].to_numpy(float)).all():
            return float(sel.p_benefit.iloc[0]), float(sel.p_harm.iloc[0])
    hr, p = head.estimate, head.p_value
    return (p / 2 if hr < 1 else 1 - p / 2), (p / 2 if hr > 1 else 1 - p / 2)


def interim_estimates(
    rows: Iterable[Estimate],
    cfg: StudyConfig,
    looks: Sequence[Mapping[str, Any]],
    inference: str,
    few_cluster: pd.DataFrame | None,
) -> list[Estimate]:
    """The interim rows of results.json for the primary outcome (none without a monitoring
    plan), from its headline Cox row (``inference``, e.g. permutation) and, for a permutation
    headline, the one-sided p-values of ``few_cluster`` (``survival_models.
    few_cluster_inference``'s frame; None: none available):

    * ``information_fraction``: the look's fraction t (``events`` the events so far);
    * ``z_boundary``, term ``look_k_of_K``: the efficacy boundary b_k, with ``p_value`` the
      headline's one-sided p-value for benefit (HR < 1); term ``look_k_of_K_harm``: -b_k,
      with the one-sided p-value for harm. The boundary is crossed when that p-value is at
      most 1 - Phi(b_k). The one-sided p-values are those of ``_one_sided``: a permutation
      test's from its permutation distribution, a bootstrap's half its two-sided p;
    * ``repeated_ci``: the hazard ratio with its repeated confidence interval, each side of
      the headline 95 % interval on the log scale widened by b_k / 1.96 (at the boundary's
      level; Jennison & Turnbull 1989).
    """
    m = cfg.monitoring
    if m is None:
        return []
    out = cfg.analysis.primary_outcome
    head = _headline(list(rows), cfg, inference)
    base = {"weighting": cfg.analysis.weighting, "inference": inference}
    if head is None or head.status != "ok" or head.estimate is None or head.p_value is None:
        reason = (
            head.reason
            if head is not None and head.reason
            else "the primary outcome's hazard ratio could not be estimated, so no interim "
            "test was made at this look"
        )
        return [
            Estimate.not_estimable(out, "interim", "look", measure, reason, **base)
            for measure in ("information_fraction", "z_boundary", "repeated_ci")
        ]
    look = current_look(cfg, int(head.events or 0), looks)
    b = look.boundary
    hr = head.estimate
    p_benefit, p_harm = _one_sided(head, cfg, inference, few_cluster)
    n, events = head.n, head.events
    rows_out = [
        Estimate(
            out,
            "interim",
            look.term,
            "information_fraction",
            look.fraction,
            **base,
            n=n,
            events=events,
        ),
        Estimate(
            out, "interim", look.term, "z_boundary", b.z, None, None, p_benefit, n, events, **base
        ),
        Estimate(
            out,
            "interim",
            f"{look.term}_harm",
            "z_boundary",
            -b.z,
            None,
            None,
            p_harm,
            n,
            events,
            **base,
        ),
    ]
    if head.ci_low is None or head.ci_high is None or not math.isfinite(b.z):
        why = (
            "the boundary is infinite at this little information: no interval"
            if not math.isfinite(b.z)
            else "the headline interval has no limit on one side (a limit was not found), "
            "so there is no repeated confidence interval"
        )
        rows_out.append(
            Estimate.not_estimable(
                out, "interim", look.term, "repeated_ci", why, n=n, events=events, **base
            )
        )
    else:
        g = math.log(hr)
        widen = b.z / HEADLINE_Z
        lo = math.exp(g - widen * (g - math.log(head.ci_low)))
        hi = math.exp(g + widen * (math.log(head.ci_high) - g))
        rows_out.append(
            Estimate(out, "interim", look.term, "repeated_ci", hr, lo, hi, None, n, events, **base)
        )
    return rows_out


# --------------------------------------------------------------------------------------------
# For the reports
# --------------------------------------------------------------------------------------------


def _interim_rows(estimates: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    rows: dict[str, Mapping[str, Any]] = {}
    for e in estimates:
        if e.get("method") != "interim":
            continue
        key = e["measure"] + ("_harm" if str(e["term"]).endswith("_harm") else "")
        rows[key] = e
    return rows


@dataclass(frozen=True)
class InterimResult:
    """What the reports say about the current look (from results.json's interim rows)."""

    k: int
    total: int
    final: bool
    fraction: float
    events: int
    boundary: float
    p_boundary: float
    p_benefit: float
    p_harm: float
    hazard_ratio: float | None
    rci_low: float | None
    rci_high: float | None
    rci_reason: str | None
    inference: str

    @property
    def crossed(self) -> str | None:
        """ "benefit" or "harm" when that boundary was crossed, else None."""
        if self.p_benefit <= self.p_boundary:
            return "benefit"
        if self.p_harm <= self.p_boundary:
            return "harm"
        return None

    @property
    def level(self) -> float:
        """The repeated interval's coverage: 1 - 2 (1 - Phi(b_k))."""
        return 1 - 2 * self.p_boundary

    @property
    def heading(self) -> str:
        if self.final:
            return f"Final analysis (look {self.k} of {self.total})"
        return f"Interim analysis {self.k} of {self.total}"

    def information(self, cfg: StudyConfig) -> str:
        """The information at this look as it may be published: the events rounded or
        suppressed as every published count (the exact fraction would give them away)."""
        m = cfg.monitoring
        if self.final:
            return "the final analysis, information fraction 1"
        shown = rounded(self.events, cfg.disclosure)
        if shown is None:
            return (
                f"fewer than {cfg.disclosure.min_cell} of the {m.expected_events:,} expected events"
            )
        return (
            f"information fraction {shown / m.expected_events:.2f}: about {shown:,} of the "
            f"{m.expected_events:,} expected events"
        )

    def sentences(self, cfg: StudyConfig) -> list[str]:
        """Plain sentences for the report and the summary."""
        when = (
            "This is the final analysis: its boundary spends the alpha left."
            if self.final
            else f"The final analysis is planned for {cfg.monitoring.final_analysis:%-d %B %Y}; "
            "until then every result is provisional, and secondary outcomes are descriptive."
        )
        z = self.boundary
        bound = (
            f"The O'Brien–Fleming-type boundary at this look ({self.information(cfg)}) is "
            f"z = {z:.2f}, a one-sided p-value of {_p(self.p_boundary)} or less (harm: the "
            f"mirror image, z = {-z:.2f})."
            if math.isfinite(z)
            else f"At this look ({self.information(cfg)}) the boundary is infinite: there is "
            "too little information to spend any of the alpha."
        )
        verdict = {
            "benefit": "The boundary was crossed in favour of the pilot (the one-sided "
            f"{_inference_name(self.inference)} p-value for benefit is {_p(self.p_benefit)}).",
            "harm": "The harm boundary was crossed (the one-sided "
            f"{_inference_name(self.inference)} p-value for harm is {_p(self.p_harm)}).",
            None: "The boundary was not crossed (the one-sided "
            f"{_inference_name(self.inference)} p-value for benefit is {_p(self.p_benefit)}, "
            f"for harm {_p(self.p_harm)}).",
        }[self.crossed]
        text = [f"{self.heading}.", bound, verdict]
        if self.hazard_ratio is not None and self.rci_low is not None:
            text.append(
                f"Hazard ratio {self.hazard_ratio:.2f}, repeated {100 * self.level:.2f}% "
                f"confidence interval {self.rci_low:.2f} to {self.rci_high:.2f} (valid "
                "whatever the number of looks)."
            )
        elif self.rci_reason:
            text.append(f"No repeated confidence interval at this look: {self.rci_reason}.")
        text.append(when)
        return text


def _p(p: float) -> str:
    if p < 1e-6:
        return "below one in a million"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _inference_name(inference: str) -> str:
    return inference.replace("_", " ")


def interim_result(
    estimates: Iterable[Mapping[str, Any]], cfg: StudyConfig
) -> InterimResult | None:
    """The current look as the reports describe it; None without a monitoring plan or when the
    primary outcome could not be tested at this look."""
    rows = _interim_rows(estimates)
    need = ("information_fraction", "z_boundary", "z_boundary_harm")
    if cfg.monitoring is None or any(rows.get(k, {}).get("status") != "ok" for k in need):
        return None
    frac, up, harm = (rows[k] for k in need)
    rci = rows.get("repeated_ci") or {}
    _, k, _, total = str(frac["term"]).split("_")
    z = up["estimate"] if up["estimate"] is not None else math.inf
    return InterimResult(
        k=int(k),
        total=int(total),
        final=is_final(cfg),
        fraction=frac["estimate"],
        events=frac["events"],
        boundary=z,
        p_boundary=_sf(z),
        p_benefit=up["p_value"],
        p_harm=harm["p_value"],
        hazard_ratio=rci.get("estimate"),
        rci_low=rci.get("ci_low"),
        rci_high=rci.get("ci_high"),
        rci_reason=rci.get("reason"),
        inference=str(up["inference"]),
    )
