"""End to end: synthetic deliveries -> validation -> cohort -> models -> results.json and
the published report, through the real Dagster definitions and the CLI."""

import json
import math
import re
import shutil

import pytest

from pipelines.cli import main
from tests.conftest import PILOT_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """A small synthetic study, run once through `dpf-eval synth` and `dpf-eval run`."""
    base = tmp_path_factory.mktemp("study")
    drop, out = base / "drop", base / "out"
    assert (
        main(
            [
                "synth",
                "--config",
                str(PILOT_CONFIG),
                "--out",
                str(drop),
                "--seed",
                "7",
                "--scale",
                "0.25",
            ]
        )
        == 0
    )
    assert main(["run", "--config", str(PILOT_CONFIG), "--drop", str(drop), "--out", str(out)]) == 0
    return drop, out


def test_definitions_load():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    for expected in (
        "raw_delivery",
        "delivery_status",
        "cohort",
        "cohort_flow",
        "weighted_cohort",
        "survival_curves",
        "cox_estimates",
        "results_json",
        "evaluation_report",
    ):
        assert expected in keys
    assert {"evaluation", "ingest_and_validate"} <= {j.name for j in repo.get_all_jobs()}
    groups = {repo.asset_graph.get(k).group_name for k in repo.asset_graph.get_all_asset_keys()}
    assert groups == {"ingest", "validate", "analysis_tables", "models", "reports", "design"}


def test_results_json_follows_the_contract(small_study, pilot_cfg):
    drop, out = small_study
    doc = json.loads((out / "restricted" / "results.json").read_text())
    assert set(doc["run"]) >= {"id", "created", "code_version", "config_sha256", "extracts"}
    assert doc["run"]["config_sha256"] == pilot_cfg.sha256
    assert {e["force"] for e in doc["run"]["extracts"]} == set(pilot_cfg.force_codes)
    fields = {
        "outcome",
        "method",
        "term",
        "measure",
        "estimate",
        "ci_low",
        "ci_high",
        "p_value",
        "n",
        "events",
        "weighting",
        "inference",
        "status",
        "reason",
    }
    for row in doc["estimates"]:
        assert set(row) == fields
        assert row["status"] in ("ok", "not_estimable")
        assert (row["reason"] is None) == (row["status"] == "ok")
    cox = [
        e
        for e in doc["estimates"]
        if e["method"] == "cox" and e["term"] == "pilot" and e["outcome"] == "any_reoffence"
    ]
    assert cox and 0 < cox[0]["ci_low"] < cox[0]["estimate"] < cox[0]["ci_high"]


def test_estimates_lie_within_the_replications_tolerance_of_truth_json(small_study, pilot_cfg):
    """Every estimand truth.json has a value for (the primary Cox hazard ratio of the four
    survival outcomes, the primary GEE odds ratio of the six intermediate ones) is in
    results.json and within the tolerance tests/test_truth.py derives from 200 replications
    at this study's scale (0.25): |log estimate - log truth| <= 3.29 root-mean-squared
    errors, a 1 % chance over the ten that a correct pipeline fails on a study drawn at
    random. And the published estimates are those of the analysis functions that the
    seeded multi-replication check of tests/test_truth.py runs, on the same study."""
    from tests.test_truth import outside_tolerance, published_estimates, replication, true_values

    drop, out = small_study
    doc = json.loads((out / "restricted" / "results.json").read_text())
    truth = json.loads((drop / "truth.json").read_text())
    published = published_estimates(doc)
    assert outside_tolerance(published, true_values(truth), truth["scale"]) == []
    rows = replication(pilot_cfg, truth["seed"], truth["scale"], headline=False)
    direct = {(r.method, r.outcome): math.exp(r.log_estimate) for r in rows.itertuples()}
    assert published == pytest.approx(direct, rel=1e-9)


def test_report_is_self_contained_and_person_centred(small_study, pilot_cfg):
    _, out = small_study
    html = (out / "published" / "current" / "evaluation-report.html").read_text()
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S)
    assert sum(len(s) > 1_000_000 for s in scripts) == 1  # plotly.js embedded exactly once
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    # no external resource of any kind outside the embedded library's own source
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert "@import" not in markup and "url(http" not in markup
    assert "Summary" in html and "hazard ratio" in html
    from evaluation.disclosure import language_hits

    assert language_hits(html, pilot_cfg.language.avoid) == []
    assert "person_id" not in html


def test_no_person_id_is_published(small_study):
    from pypdf import PdfReader

    drop, out = small_study
    ids = set()
    for people in drop.glob("*/*/people.csv"):
        ids |= {line.split(",")[0] for line in people.read_text().splitlines()[1:]}
    assert len(ids) > 1000  # every person of every delivery
    for f in (out / "published" / "current").iterdir():
        if f.suffix == ".pdf":  # a page as printed: its text
            text = "".join(page.extract_text() for page in PdfReader(f).pages)
        else:
            text = f.read_text()
        # each run of the characters a pseudonym is made of: none is one
        words = set(re.findall(r"[A-Za-z0-9_-]{8,64}", text))
        assert not words & ids, f.name


def test_second_run_with_same_deliveries_gives_same_numbers(small_study, capsys):
    drop, out = small_study
    before = json.loads((out / "restricted" / "results.json").read_text())["estimates"]
    args = ["run", "--config", str(PILOT_CONFIG), "--drop", str(drop), "--out", str(out)]
    assert main([*args, "--recompute"]) == 0
    assert "already validated" in capsys.readouterr().out
    after = json.loads((out / "restricted" / "results.json").read_text())["estimates"]
    assert after == before


def test_run_exit_codes(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            [
                "run",
                "--config",
                str(PILOT_CONFIG),
                "--drop",
                str(empty),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "no deliveries found" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "--config",
                str(tmp_path / "missing.yaml"),
                "--drop",
                str(empty),
                "--out",
                str(tmp_path / "never"),
            ]
        )
        == 2
    )
    assert "cannot read configuration" in capsys.readouterr().err
    assert not (tmp_path / "never").exists(), "a bad config must not leave an output folder"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", str(PILOT_CONFIG)])
    assert exit_.value.code == 2


def test_check_exit_codes(small_study, tmp_path, capsys):
    drop, _ = small_study
    good = next(drop.glob("ASH/*"))
    assert main(["check", str(good), "--config", str(PILOT_CONFIG)]) == 0
    bad = tmp_path / "ASH" / good.name
    shutil.copytree(good, bad)
    people = bad / "people.csv"
    lines = people.read_text().splitlines()
    lines[1] = lines[1].replace("male", "mail", 1)
    people.write_text("\n".join(lines) + "\n")
    assert main(["check", str(bad), "--config", str(PILOT_CONFIG)]) == 1
    out = capsys.readouterr().out
    assert "people.csv" in out
    assert main(["check", str(tmp_path / "nowhere"), "--config", str(PILOT_CONFIG)]) == 2


def test_synth_refuses_to_overwrite(small_study, capsys):
    drop, _ = small_study
    assert (
        main(["synth", "--config", str(PILOT_CONFIG), "--out", str(drop), "--scale", "0.25"]) == 1
    )
    assert "dpf-eval:" in capsys.readouterr().err
