"""ARMS risk and protective factors: Harrell's C against lifelines, the likelihood-ratio
ingredients against lifelines' Cox fit, observed rates against a direct count, and the
generator's protective effect recovered as a gain in C."""

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from evaluation.arms import Concordance, _design, arms_prediction, observed_rates


def _random_survival(seed, n=3000):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 60, n).astype(float)  # many tied times
    event = rng.random(n) < 0.3
    score = rng.integers(0, 12, n) + 0.1 * rng.integers(0, 3, n)  # many tied scores
    return time, event, score


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c_index_equals_lifelines(seed):
    time, event, score = _random_survival(seed)
    codes, k = Concordance.codes(score)
    ours = Concordance(time, event).c(codes, k)
    # lifelines takes predicted survival times: higher risk = shorter, so pass -score.
    assert ours == pytest.approx(concordance_index(time, -score, event), abs=1e-12)


def test_weighted_c_index_equals_repeated_rows():
    time, event, score = _random_survival(4, n=800)
    w = np.random.default_rng(5).integers(0, 4, len(time))
    codes, k = Concordance.codes(score)
    ours = Concordance(time, event).c(codes, k, w.astype(float))
    rep = np.repeat(np.arange(len(time)), w)
    assert ours == pytest.approx(concordance_index(time[rep], -score[rep], event[rep]), abs=1e-12)


@pytest.fixture(scope="module")
def synthetic_arms(pilot_cfg):
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.synth import generate_study

    study = generate_study(pilot_cfg, seed=3, scale=2.0)
    tables = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "assessments", "events")
    }
    windows = force_windows(
        pilot_cfg, {f.code: pilot_cfg.study.extract_date for f in pilot_cfg.forces}
    )
    cohort, _ = build_cohort(
        tables["people"], tables["assessments"], tables["events"], windows, pilot_cfg
    )
    tables, estimates = arms_prediction(cohort, pilot_cfg, reps=300)
    return cohort, tables, estimates


def test_likelihood_ratio_matches_lifelines(synthetic_arms):
    cohort, tables, _ = synthetic_arms
    d = cohort.drop_nulls(["risk_level", "risk_factors", "protective_factors"]).to_pandas()
    X = _design(d)
    X["T"], X["E"] = d["any_reoffence_time"], (d["any_reoffence_status"] == 1).astype(int)
    small = ["risk_medium", "risk_high", "risk_very_high", "risk_factors"]
    ll_small = CoxPHFitter().fit(X[[*small, "T", "E"]], "T", "E").log_likelihood_
    ll_big = CoxPHFitter().fit(X[[*small, "protective_factors", "T", "E"]], "T", "E")
    lr = tables["arms_lr_test"].set_index(["outcome", "comparison"])
    got = lr.loc[("any_reoffence", "+protective_factors | risk_level+risk_factors"), "chi2"]
    assert got == pytest.approx(2 * (ll_big.log_likelihood_ - ll_small), rel=1e-6)
    c = tables["arms_c_index"].set_index(["outcome", "model"])
    lp = X[[*small, "protective_factors"]].to_numpy() @ ll_big.params_.to_numpy()
    want = concordance_index(X["T"], -lp, X["E"])
    assert c.loc[("any_reoffence", "risk_level+risk_factors+protective_factors"), "c_index"] == (
        pytest.approx(want, abs=1e-6)
    )


def test_observed_rates_direct_count(synthetic_arms):
    cohort, tables, _ = synthetic_arms
    d = cohort.drop_nulls(["risk_level", "risk_factors", "protective_factors"]).to_pandas()
    cell = d[(d.risk_level == "high") & d.protective_factors.isin([3.0, 4.0])]
    events = int((cell["sexual_reoffence_status"] == 1).sum())
    years = cell["sexual_reoffence_time"].sum() / 365.25
    r = tables["arms_rates"].set_index(["outcome", "risk_level", "protective_band"])
    row = r.loc[("sexual_reoffence", "high", "3-4")]
    assert (row["people"], row["events"]) == (len(cell), events)
    assert row["rate_per_100_person_years"] == pytest.approx(100 * events / years)
    assert len(observed_rates(d, "any_reoffence")) == 12  # 4 levels x 3 bands, empty included


def test_synthetic_protective_factors_improve_prediction(synthetic_arms):
    _, tables, estimates = synthetic_arms
    diff = tables["arms_c_difference"].set_index(["outcome", "comparison"])
    head = diff.loc[("any_reoffence", "risk_level+protective_factors vs risk_level")]
    # The generator lowers the hazard by exp(-0.2) per protective factor.
    assert head["difference"] > 0 and head["ci_low"] > 0
    lr = tables["arms_lr_test"].set_index(["outcome", "comparison"])
    assert lr.loc[("any_reoffence", "+protective_factors | risk_level"), "p_value"] < 0.001
    models = tables["arms_models"].set_index(["outcome", "model", "term"])
    hr = models.loc[("any_reoffence", "risk_level+protective_factors", "protective_factors")]
    assert hr["hazard_ratio"] < 1
    kinds = pd.Series([(e.method, e.measure) for e in estimates]).value_counts()
    assert kinds[("c_index", "c_index")] == 8 and kinds[("c_index", "c_index_difference")] == 6
    assert kinds[("lr_test", "lr_chi2")] == 6
