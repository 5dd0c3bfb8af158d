import pandas as pd

from evaluation.config import Disclosure
from evaluation.disclosure import (
    csv_safe,
    cut_curve,
    language_hits,
    protect_count_table,
    safe_count,
    safe_rate,
)

RULES = Disclosure(min_cell=10, round_to=5)


def test_small_counts_suppressed_and_others_rounded():
    assert [safe_count(n, RULES) for n in (0, 1, 9, 10, 12, 13, 1234)] == [
        "<10",
        "<10",
        "<10",
        "10",
        "10",
        "15",
        "1,235",
    ]


def test_rates_from_suppressed_counts_withheld():
    assert safe_rate(5, 100, RULES) == "withheld"
    assert safe_rate(20, 8, RULES) == "withheld"
    assert safe_rate(20, 200, RULES) == "10.0"


def test_secondary_suppression_hides_the_recoverable_cell():
    df = pd.DataFrame({"total": [100, 100], "a": [3, 50], "b": [40, 25], "c": [57, 25]})
    out = protect_count_table(df, ["a", "b", "c"], RULES, total_col="total")
    # row 0: 'a' is small; 'b' (the next smallest) must go too, or a = total - b - c
    assert out.loc[0, "a"] == "<10" and out.loc[0, "b"] == "<10"
    assert out.loc[0, "c"] == "55"
    assert list(out.loc[1, ["a", "b", "c"]]) == ["50", "25", "25"]


def test_curve_cut_where_fewer_than_min_cell_at_risk():
    curve = pd.DataFrame({"time": [1, 2, 3, 4], "n_at_risk": [50, 20, 9, 30]})
    assert list(cut_curve(curve, RULES)["time"]) == [1, 2]


def test_language_check_whole_words_any_case():
    avoid = ["sex offender", "nominal", "RSO"]
    assert language_hits("Sex Offender register", avoid) == ["sex offender"]
    assert language_hits("the nominal was seen", avoid) == ["nominal"]
    assert language_hits("people with sexual convictions; PERSON", avoid) == []


def test_csv_formula_injection_guarded():
    assert csv_safe('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_safe("-12.5") == "-12.5"
    assert csv_safe("plain") == "plain"


def test_published_reasons_name_only_the_contracts_files_and_columns():
    from evaluation.deliveries import blocking_summary
    from evaluation.disclosure import public_column, public_file
    from evaluation.validation import Finding, ValidationReport

    hostile = '=HYPERLINK("evil.example","x")&first_name'
    assert public_file("people.csv") == "people.csv" and public_column("birth_year") == "birth_year"
    assert public_file("@SUM(1+1)*cmd|'calc'!A0.csv") == "a file not in the contract"
    assert public_column(hostile) == "a column not in the contract"

    def summary(file: str, column: str | None) -> str:
        f = Finding("ASH", "2026-09-30", file, column, "identifier_name", "error", 0, [], "m")
        return blocking_summary(ValidationReport("ASH", "2026-09-30", "/x", None, {}, [f], 1))

    text = summary("people.csv", hostile)
    assert "HYPERLINK" not in text and "first_name" not in text
    assert text == (
        "1 blocking problem, e.g. people.csv, a column not in the contract, rule identifier_name"
    )
    assert "column birth_year" in summary("people.csv", "birth_year")
    assert "cmd" not in summary("@SUM(1+1)*cmd|'calc'!A0.csv", None)
