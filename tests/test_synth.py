"""The synthetic data generator: determinism, the extract contract, plausible rates and the
known truth (evaluation.synth)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from evaluation.cohort import RISK_SCORE
from evaluation.config import KNOWN_COVARIATES, load_config
from evaluation.extracts import POLARS_TYPE
from evaluation.schema import SCHEMA_VERSION, TABLE_COLUMNS, TABLES, column_names
from evaluation.synth import generate_study, write_study

ROOT = Path(__file__).resolve().parents[1]
PNC = re.compile(r"\d{2,4}/\d{1,7}[A-Z]")
NI = re.compile(r"[A-Z]{2}\d{6}")
# The cohort covariates (config.KNOWN_COVARIATES but mappa_level), which the hazard uses.
COVARIATES = tuple(c for c in KNOWN_COVARIATES if c != "mappa_level")


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "config" / "pilot.yaml")


@pytest.fixture(scope="module")
def small(cfg):
    return generate_study(cfg, seed=1, scale=0.1)


@pytest.fixture(scope="module")
def drop(small, cfg, tmp_path_factory):
    drop = tmp_path_factory.mktemp("drop")
    write_study(small, cfg, drop)
    return drop


@pytest.fixture(scope="module")
def full(cfg):
    """The demo study at scale 1: large enough for stable rates, quick to generate."""
    return generate_study(cfg, seed=5, scale=1.0)


def _stack(study, cfg, table: str) -> pl.DataFrame:
    return pl.concat(
        [
            t[table].with_columns(
                force=pl.lit(code),
                pilot=pl.lit(cfg.force(code).arm == "pilot"),
                go_live=pl.lit(cfg.force(code).go_live),
            )
            for code, t in study.tables.items()
        ]
    )


def _baseline(study, cfg) -> pl.DataFrame:
    """People with the cohort's reading of their baseline: index date, age and the latest
    assessment on or before the index date."""
    people = _stack(study, cfg, "people").with_columns(
        index_date=pl.max_horizontal("go_live", "management_start")
    )
    asm = _stack(study, cfg, "assessments").sort("assessment_date")
    base = (
        people.sort("index_date")
        .join_asof(
            asm.select(
                "force",
                "person_id",
                "assessment_date",
                "risk_level",
                "risk_factors",
                "protective_factors",
            ),
            left_on="index_date",
            right_on="assessment_date",
            by=["force", "person_id"],
            strategy="backward",
            check_sortedness=False,  # sorted by date overall, so within every person too
        )
        .with_columns(
            age=pl.col("index_date").dt.year() - pl.col("birth_year"),
            male=pl.col("sex") == "male",
            risk_level_score=pl.col("risk_level").replace_strict(RISK_SCORE, default=None),
            contact_offence=pl.col("index_offence").is_in(["contact_adult", "contact_child"]),
        )
    )
    return base.with_columns(pl.col(c).cast(pl.Float64) for c in COVARIATES)


# --- determinism and writing -------------------------------------------------------------


def _files(drop: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(drop)): p.read_bytes() for p in sorted(drop.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_does_not(cfg, drop, tmp_path):
    again = tmp_path / "again"
    write_study(generate_study(cfg, seed=1, scale=0.1), cfg, again)
    assert _files(again) == _files(drop)
    other = tmp_path / "other"
    write_study(generate_study(cfg, seed=2, scale=0.1), cfg, other)
    first, second = _files(drop), _files(other)
    assert first.keys() == second.keys()
    differing = [k for k in first if k.endswith("people.csv") and first[k] != second[k]]
    assert len(differing) == len(cfg.forces)


def test_layout_and_manifests_match_the_files(cfg, small, drop):
    extract = cfg.study.extract_date.isoformat()
    assert sorted(p.name for p in drop.iterdir()) == sorted([*cfg.force_codes, "truth.json"])
    for code in cfg.force_codes:
        folder = drop / code / extract
        names = {f"{t}.csv" for t in TABLES}
        assert {p.name for p in folder.iterdir()} == names | {"manifest.json"}
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["schema_version"] == SCHEMA_VERSION
        assert manifest["force_code"] == code
        assert manifest["extract_date"] == extract == manifest["period_end"]
        assert manifest["period_start"] == cfg.study.period_start.isoformat()
        assert set(manifest["files"]) == names
        for name, entry in manifest["files"].items():
            data = (folder / name).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["rows"] == data.count(b"\n") - 1 == small.tables[code][name[:-4]].height
    truth = json.loads((drop / "truth.json").read_text())
    assert truth["people"] == sum(t["people"].height for t in small.tables.values())


def test_rewriting_is_a_no_op_and_different_content_is_refused(cfg, small, tmp_path):
    drop = tmp_path / "drop"
    folders = write_study(small, cfg, drop)
    before = _files(drop)
    assert write_study(small, cfg, drop) == folders
    assert _files(drop) == before
    with pytest.raises(FileExistsError, match="different content"):
        write_study(generate_study(cfg, seed=9, scale=0.1), cfg, drop)
    assert _files(drop) == before


def test_parquet_deliveries_hold_the_same_tables(cfg, small, tmp_path):
    folders = write_study(small, cfg, tmp_path / "drop", fmt="parquet")
    folder = folders[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {f"{t}.parquet" for t in TABLES}
    for table in TABLES:
        back = pl.read_parquet(folder / f"{table}.parquet")
        assert back.equals(small.tables[folder.parent.name][table])


# --- the extract contract ----------------------------------------------------------------


def test_frames_have_the_contract_columns_and_types(small):
    for tables in small.tables.values():
        assert set(tables) == set(TABLES)
        for table, df in tables.items():
            assert df.columns == column_names(table)
            for col in TABLE_COLUMNS[table]:
                assert df.schema[col.name] == POLARS_TYPE[col.dtype], col.name


def _read_text(folder: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(folder / f"{table}.csv", infer_schema=False)


def _typed(text: pl.DataFrame, table: str) -> pl.DataFrame:
    """Parse the CSV text strictly by the contract; a cell that does not parse fails."""
    out = []
    for col in TABLE_COLUMNS[table]:
        s = text[col.name]
        if col.dtype == "date":
            s = s.str.strptime(pl.Date, "%Y-%m-%d", strict=True)
        elif col.dtype == "bool":
            assert set(s.drop_nulls().unique()) <= {"true", "false"}, col.name
            s = s == "true"
        elif col.dtype == "int":
            s = s.cast(pl.Int64, strict=True)
        out.append(s)
    return pl.DataFrame(out)


def test_every_written_row_meets_the_extract_spec(cfg, drop):
    for code in cfg.force_codes:
        folder = drop / code / cfg.study.extract_date.isoformat()
        tables = {}
        for table in TABLES:
            text = _read_text(folder, table)
            assert text.columns == column_names(table)
            tables[table] = _typed(text, table)
        _assert_meets_spec(cfg, code, tables)


def test_every_row_of_a_full_scale_study_meets_the_extract_spec(cfg, full):
    # Rare cases (a date near the extract date, say) only show at full scale.
    for code, tables in full.tables.items():
        _assert_meets_spec(cfg, code, tables)


def _assert_meets_spec(cfg, code: str, t: dict[str, pl.DataFrame]) -> None:
    extract = cfg.study.extract_date
    for table, df in t.items():
        for col in TABLE_COLUMNS[table]:
            s = df[col.name]
            where = (code, table, col.name)
            if col.required:
                assert s.null_count() == 0, where
            s = s.drop_nulls()
            if col.enum is not None:
                assert s.is_in(list(col.enum)).all(), where
            if col.min is not None:
                assert (s >= col.min).all(), where
            if col.max is not None:
                assert (s <= col.max).all(), where
            if col.unique:
                assert s.n_unique() == len(s), where
            if col.pattern is not None:
                assert s.str.contains(col.pattern).all(), where
            if col.dtype == "date" and col.name != "notification_end":  # that may lie ahead
                assert (s <= extract).all(), where

    people = t["people"]
    ids = people["person_id"]
    assert not ids.str.contains(PNC.pattern).any()
    assert not ids.str.contains(NI.pattern).any()
    assert ids.str.len_chars().min() >= 12
    assert people["birth_year"].max() <= extract.year - 10
    assert (people["prior_sexual_convictions"] <= people["prior_convictions"]).all()
    ended = people["management_end"].is_not_null()
    assert (ended == people["management_end_reason"].is_not_null()).all()
    assert (people["management_end"].drop_nulls() <= extract).all()
    assert (people["management_end"] >= people["management_start"]).all()
    # managed at some time in the period
    assert (people["management_start"] <= extract).all()
    assert (people["management_end"].fill_null(extract) >= cfg.study.period_start).all()
    assert (people["notification_end"] > people["notification_start"]).all()

    period = people.select(
        "person_id",
        "management_start",
        last=pl.col("management_end").fill_null(extract),
    )
    for table, date in (
        ("assessments", "assessment_date"),
        ("contacts", "contact_date"),
        ("events", "event_date"),
        ("circumstances", "record_date"),
    ):
        df = t[table].join(period, on="person_id", how="left")
        assert df["management_start"].null_count() == 0, (code, table, "orphan person_id")
        inside = (df[date] >= df["management_start"]) & (df[date] <= df["last"])
        assert inside.all(), (code, table, date)
    circ = t["circumstances"]
    assert circ.select("person_id", "record_date").is_duplicated().sum() == 0
    events = t["events"]
    assert (events["proven"] == events["disposal_date"].is_not_null()).all()
    proven = events.filter(pl.col("proven"))
    assert (proven["disposal_date"] >= proven["event_date"]).all()
    assert (proven["disposal_date"] <= extract).all()


# --- realism and the known truth ---------------------------------------------------------


def _yearly_rates(study, cfg) -> dict[str, float]:
    """Proven events per person-year over the period, up to a year before the extract date (so
    that offences have had time to be proven)."""
    end = cfg.study.extract_date - dt.timedelta(days=365)
    people = _stack(study, cfg, "people").with_columns(
        years=(
            pl.min_horizontal(pl.col("management_end").fill_null(end), pl.lit(end))
            - pl.max_horizontal("management_start", pl.lit(cfg.study.period_start))
        )
        .dt.total_days()
        .clip(0)
        / 365.25
    )
    events = _stack(study, cfg, "events").filter(pl.col("proven") & (pl.col("event_date") <= end))
    years = people["years"].sum()
    groups = {
        "sexual_reoffence": ["sexual_offence"],
        "any_reoffence": ["sexual_offence", "other_offence"],
        "breach": ["notification_breach", "order_breach"],
        "recall": ["recall"],
    }
    return {
        k: events.filter(pl.col("event_type").is_in(v)).height / years for k, v in groups.items()
    }


def test_yearly_rates_are_plausible(cfg, full):
    rates = _yearly_rates(full, cfg)
    assert 0.01 <= rates["sexual_reoffence"] <= 0.02
    assert 0.065 <= rates["any_reoffence"] <= 0.095
    assert 0.04 <= rates["breach"] <= 0.06
    assert 0.02 <= rates["recall"] <= 0.04


def test_caseloads_contacts_and_people_are_plausible(cfg, full):
    people = _stack(full, cfg, "people")
    per_force = people.group_by("force").len()["len"]
    assert per_force.min() >= 600 and per_force.max() <= 3000
    assert 1100 <= per_force.mean() <= 2100
    assert 0.95 <= (people["sex"] == "male").mean() <= 0.99
    age = _baseline(full, cfg)["age"]  # at the index date
    assert age.min() >= 18 and age.max() <= 85
    assert (people["notification_start"] <= people["management_start"]).mean() >= 0.9
    assert (people["mappa_level"] == 1).mean() >= 0.85
    assert 0.01 <= people["static_risk"].null_count() / people.height <= 0.2
    reasons = set(people["management_end_reason"].drop_nulls())
    assert reasons == {
        "notification_ended",
        "died",
        "transferred_out",
        "custody",
        "removed_from_register",
        "other",
    }
    # ~1M contacts for ~70k people nationally, i.e. about 14 a person
    contacts = _stack(full, cfg, "contacts")
    assert 10 <= contacts.height / people.height <= 18
    assert full.truth["contacts"] == contacts.height
    assert full.truth["people"] == people.height


def test_rates_rise_with_risk_and_fall_with_protective_factors(cfg, full):
    base = _baseline(full, cfg)
    counts = (
        _stack(full, cfg, "events").filter(pl.col("proven")).group_by("force", "person_id").len()
    )
    base = base.join(counts, on=["force", "person_id"], how="left").with_columns(
        pl.col("len").fill_null(0)
    )
    by_risk = base.group_by("risk_level_score").agg(pl.col("len").mean()).sort("risk_level_score")
    assert by_risk["len"].is_sorted() and by_risk["len"][3] > 2 * by_risk["len"][0]
    low_pf = base.filter(pl.col("protective_factors") <= 1)["len"].mean()
    high_pf = base.filter(pl.col("protective_factors") >= 3)["len"].mean()
    assert high_pf < low_pf


def test_pilot_caseloads_are_higher_risk(cfg, full):
    base = _baseline(full, cfg)
    means = base.group_by("pilot").agg(
        pl.col("risk_level_score").mean(), pl.col("prior_convictions").mean()
    )
    pilot = means.filter(pl.col("pilot")).row(0, named=True)
    comparison = means.filter(~pl.col("pilot")).row(0, named=True)
    assert pilot["risk_level_score"] > comparison["risk_level_score"] + 0.15
    assert pilot["prior_convictions"] > comparison["prior_convictions"]


def test_assessments_stay_at_baseline_until_a_year_after_the_index_date(cfg, full):
    asm = _stack(full, cfg, "assessments").join(
        _stack(full, cfg, "people").select(
            "force", "person_id", index_date=pl.max_horizontal("go_live", "management_start")
        ),
        on=["force", "person_id"],
    )
    values = ["risk_level", "risk_factors", "protective_factors"]
    early = asm.filter(pl.col("assessment_date") < pl.col("index_date") + pl.duration(days=365))
    assert (
        early.group_by("force", "person_id").agg(pl.struct(values).n_unique().alias("n"))["n"].max()
        == 1
    )
    changed = asm.group_by("force", "person_id").agg(pl.struct(values).n_unique().alias("n"))
    assert (changed["n"] > 1).sum() > 100  # later assessments do change


def test_poisson_model_with_covariates_recovers_the_truth_and_naive_is_biased(cfg, full):
    """Proven events per person before and after go-live: with the cohort covariates (read
    from the tables as the cohort does) and force effects, the pilot rate ratio and every
    covariate coefficient match truth.json; without adjustment the pilot effect is biased."""
    end = cfg.study.extract_date - dt.timedelta(days=365)
    base = _baseline(full, cfg).with_columns(
        first=pl.max_horizontal("management_start", pl.lit(cfg.study.period_start)),
        stop=pl.min_horizontal(pl.col("management_end").fill_null(end), pl.lit(end))
        + pl.duration(days=1),
    )
    segments = pl.concat(
        [
            base.with_columns(
                post=pl.lit(False), a=pl.col("first"), b=pl.min_horizontal("go_live", "stop")
            ),
            base.with_columns(
                post=pl.lit(True), a=pl.max_horizontal("go_live", "first"), b=pl.col("stop")
            ),
        ]
    ).filter(pl.col("b") > pl.col("a"))
    events = _stack(full, cfg, "events").filter(pl.col("proven") & (pl.col("event_date") <= end))
    counts = (
        segments.select("force", "person_id", "post", "a", "b")
        .join(events.select("force", "person_id", "event_date"), on=["force", "person_id"])
        .filter((pl.col("event_date") >= pl.col("a")) & (pl.col("event_date") < pl.col("b")))
        .group_by("force", "person_id", "post")
        .len()
    )
    d = segments.join(counts, on=["force", "person_id", "post"], how="left").with_columns(
        events=pl.col("len").fill_null(0),
        years=(pl.col("b") - pl.col("a")).dt.total_days() / 365.25,
        pilot_post=(pl.col("pilot") & pl.col("post")).cast(pl.Float64),
    )
    forces = d["force"].to_dummies(drop_first=True).cast(pl.Float64)
    x = pl.concat([d.select("pilot_post", *COVARIATES), forces], how="horizontal")
    offset = np.log(d["years"].to_numpy())
    y = d["events"].to_numpy()
    fit = sm.GLM(
        y, sm.add_constant(x.to_pandas()), family=sm.families.Poisson(), offset=offset
    ).fit()
    truth = full.truth
    log_hr = np.log(truth["hazard_ratio"]["any_adverse"])
    assert abs(fit.params["pilot_post"] - log_hr) < 3.5 * fit.bse["pilot_post"]
    for c in COVARIATES:
        assert abs(fit.params[c] - truth["log_hazard_coefficients"][c]) < 3.5 * fit.bse[c], c
    # Naive: pilot against comparison forces after go-live, without covariates.
    post = d.filter(pl.col("post"))
    naive = sm.GLM(
        post["events"].to_numpy(),
        sm.add_constant(post.select("pilot_post").to_pandas()),
        family=sm.families.Poisson(),
        offset=np.log(post["years"].to_numpy()),
    ).fit()
    assert naive.params["pilot_post"] - log_hr > 0.1


def _first_after(study, cfg, table: str, date: str) -> pl.DataFrame:
    """Each cohort-like person's baseline and their first record at least 12 months (or, for
    circumstances, 9 months) after the index date."""
    days = 365 if table == "assessments" else 275
    base = _baseline(study, cfg).filter(
        pl.col("management_start") <= pl.col("go_live") + pl.duration(days=365)
    )
    later = (
        _stack(study, cfg, table)
        .join(base.select("force", "person_id", "index_date"), on=["force", "person_id"])
        .filter(pl.col(date) >= pl.col("index_date") + pl.duration(days=days))
        .sort(date)
        .group_by("force", "person_id")
        .first()
    )
    later = later.select(
        "force",
        "person_id",
        *[pl.col(c).alias(f"{c}_later") for c in column_names(table) if c != "person_id"],
    )
    return base.join(later, on=["force", "person_id"])


def _logit(y: np.ndarray, x: pl.DataFrame):
    return sm.GLM(y, sm.add_constant(x.to_pandas()), family=sm.families.Binomial()).fit()


def test_twelve_month_outcomes_recover_the_configured_odds_ratios(cfg, full):
    circ = _first_after(full, cfg, "circumstances", "record_date")
    baseline = (
        _stack(full, cfg, "circumstances")
        .join(circ.select("force", "person_id", "index_date"), on=["force", "person_id"])
        .filter(pl.col("record_date") <= pl.col("index_date"))
        .sort("record_date")
        .group_by("force", "person_id")
        .last()
        .select("force", "person_id", "employment", "accommodation")
    )
    d = circ.join(baseline, on=["force", "person_id"]).with_columns(
        pl.col("pilot").cast(pl.Float64),
        age10=(pl.col("age") - 45) / 10,
        employed0=(pl.col("employment") == "employed").cast(pl.Float64),
        settled0=(pl.col("accommodation") == "settled").cast(pl.Float64),
    )
    for outcome, column, value, base in (
        ("employed", "employment_later", "employed", "employed0"),
        ("settled_accommodation", "accommodation_later", "settled", "settled0"),
    ):
        fit = _logit(
            (d[column] == value).to_numpy().astype(float),
            d.select(
                "pilot", base, "age10", "risk_level_score", "protective_factors", "on_licence"
            ),
        )
        target = np.log(full.truth["odds_ratio_12m"][outcome])
        assert abs(fit.params["pilot"] - target) < 3.5 * fit.bse["pilot"], outcome

    asm = _first_after(full, cfg, "assessments", "assessment_date").filter(
        pl.col("risk_level_score") > 0
    )
    down = (asm["risk_level_later"].replace_strict(RISK_SCORE) < asm["risk_level_score"]).to_numpy()
    fit = _logit(down.astype(float), asm.select(pl.col("pilot").cast(pl.Float64)))
    target = np.log(full.truth["risk_step_down_odds_ratio"])
    assert abs(fit.params["pilot"] - target) < 3.5 * fit.bse["pilot"]


def test_fidelity_rises_after_go_live_in_pilot_forces_only(cfg, full):
    contacts = _stack(full, cfg, "contacts")
    before = contacts.filter(~pl.col("pilot") | (pl.col("contact_date") < pl.col("go_live")))
    assert not before["dmp_reviewed"].any()
    assert contacts.filter(~pl.col("pilot"))["officer_trained"].mean() < 0.1
    settled = contacts.filter(
        pl.col("pilot") & (pl.col("contact_date") >= pl.col("go_live") + pl.duration(days=365))
    )
    by_force = settled.group_by("force").agg(
        pl.col("dmp_reviewed").mean(), pl.col("officer_trained").mean()
    )
    assert by_force["dmp_reviewed"].min() >= 0.35 and by_force["dmp_reviewed"].max() <= 0.9
    assert by_force["officer_trained"].min() >= 0.6
    dmp_goals = settled.group_by("dmp_reviewed").agg(pl.col("goals_agreed").mean())
    assert dmp_goals.sort("dmp_reviewed")["goals_agreed"].is_sorted()


def test_recalls_are_mostly_of_people_on_licence(cfg, full):
    recalls = _stack(full, cfg, "events").filter(pl.col("event_type") == "recall")
    on_licence = recalls.join(
        _stack(full, cfg, "people").select("force", "person_id", "on_licence"),
        on=["force", "person_id"],
    )["on_licence"]
    assert on_licence.mean() > 0.5


def test_scale_multiplies_people(cfg, small):
    larger = generate_study(cfg, seed=1, scale=0.3)
    for code in cfg.force_codes:
        n_small = small.truth["forces"][code]["people"]
        n_large = larger.truth["forces"][code]["people"]
        assert abs(n_large / n_small - 3) < 0.1, code
        assert larger.tables[code]["people"].height == n_large


def test_truth_holds_the_composite_hazard_ratios(cfg, small):
    truth = small.truth
    hr = cfg.synthetic.hazard_ratio
    assert truth["hazard_ratio"]["sexual_reoffence"] == hr["sexual_reoffence"]
    assert truth["hazard_ratio"]["breach"] == hr["breach"]
    share = truth["proven_share"]["any_adverse"]
    weighted = sum(share[k] * truth["event_type_hazard_ratio"][k] for k in share)
    assert truth["hazard_ratio"]["any_adverse"] == pytest.approx(weighted, abs=1e-6)
    assert min(hr.values()) < truth["hazard_ratio"]["any_adverse"] < max(hr.values())
    for key in (
        "odds_ratio_12m",
        "risk_step_down_odds_ratio",
        "seed",
        "scale",
        "people",
        "contacts",
        "forces",
        "log_hazard_coefficients",
        "frailty_sd",
    ):
        assert key in truth
    assert set(truth["forces"]) == set(cfg.force_codes)

    same = {k: 0.7 for k in hr}
    synthetic = cfg.synthetic.model_copy(update={"hazard_ratio": same})
    equal = generate_study(cfg.model_copy(update={"synthetic": synthetic}), seed=1, scale=0.02)
    assert equal.truth["hazard_ratio"] == pytest.approx(same)


def test_bad_arguments_are_refused(cfg, small, tmp_path):
    with pytest.raises(ValueError, match="scale"):
        generate_study(cfg, scale=0)
    with pytest.raises(ValueError, match="fmt"):
        write_study(small, cfg, tmp_path, fmt="xlsx")
