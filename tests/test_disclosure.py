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


def test_an_upper_limit_of_an_exact_multiple_of_round_to_stays_on_it():
    from evaluation.disclosure import share_on_rounded_scale

    # 0.55 of 100 people is 55, a multiple of 5: rounding up keeps 55/100. In floating point
    # 0.55 * 100 / 5 = 11.000000000000002, which a bare ceil takes to 12 (60/100), widening
    # the published interval by a whole rounding step for nothing.
    assert 0.55 * 100 / 5 > 11
    assert share_on_rounded_scale(0.55, 100, RULES, "up") == 0.55
    assert share_on_rounded_scale(0.56, 100, RULES, "up") == 0.60  # 56 people: up to 60


def test_a_lower_limit_of_an_exact_multiple_of_round_to_stays_on_it():
    from evaluation.disclosure import share_on_rounded_scale

    # 0.575 of 200 people is 115, a multiple of 5: rounding down keeps 115/200. In floating
    # point 0.575 * 200 / 5 = 22.999999999999996, which a bare floor takes to 22 (110/200).
    assert 0.575 * 200 / 5 < 23
    assert share_on_rounded_scale(0.575, 200, RULES, "down") == 0.575
    assert share_on_rounded_scale(0.574, 200, RULES, "down") == 0.55  # 114.8: down to 110


def test_with_round_to_one_a_single_implied_person_is_still_withheld():
    from evaluation.disclosure import share_on_rounded_scale

    # round_to 1 is a valid config (>= 1): 1% of 100 implies one person, below min_cell 10
    ones = Disclosure(min_cell=10, round_to=1)
    assert share_on_rounded_scale(0.01, 100, ones) is None
    assert share_on_rounded_scale(0.01, 100, ones, "down") == 0.0
    assert share_on_rounded_scale(0.01, 100, ones, "up") == 0.10  # up to min_cell
    assert share_on_rounded_scale(0.12, 100, ones) == 0.12


def test_the_delivery_folder_is_named_as_such():
    from evaluation.disclosure import public_file

    assert public_file(".") == public_file("") == public_file(None) == "the delivery folder"


def _steps(times, n0=100, survival=True, halfwidth=(0.05, 0.05), tail=None):
    """A step curve with one event at each of `times` (1% of n0 each), a censoring row at
    `tail`, and a pointwise interval of value -/+ halfwidth."""
    rows = []
    for i, t in enumerate(times):
        v = 1 - 0.01 * (i + 1) if survival else 0.01 * (i + 1)
        rows.append((t, v, v - halfwidth[0], v + halfwidth[1], n0 - i))
    rows.append((tail, rows[-1][1], rows[-1][2], rows[-1][3], n0 - len(times)))
    return pd.DataFrame(rows, columns=["time", "value", "ci_low", "ci_high", "n_at_risk"])


def test_incidence_curve_published_on_the_rounded_scale_with_limits_widened():
    from evaluation.disclosure import DAYS_PER_MONTH, publishable_curve

    # Ten events on days 1-10 among 100 people, then a censoring at day 61. By hand, month 1
    # (day 30.4375) is the only step with >= 10 events: incidence 0.10 (10 people: nearest,
    # 10/100), lower limit 0.04 (4 people: down to 0, never below min_cell), upper 0.18
    # (18 people: up to 20, 0.20); at risk there is the head count of the day-10 row, 91.
    # Month 2 adds no event, so the published curve ends at month 1.
    curve = _steps(range(1, 11), survival=False, halfwidth=(0.06, 0.08), tail=61)
    out = publishable_curve(curve, RULES, survival=False)
    assert out.to_dict("list") == {
        "time": [0.0, DAYS_PER_MONTH],
        "value": [0.0, 0.10],
        "ci_low": [0.0, 0.0],
        "ci_high": [0.0, 0.20],
        "n_at_risk": [100.0, 91.0],
    }


def test_an_event_on_a_shown_step_is_not_counted_again_for_the_next():
    from evaluation.disclosure import DAYS_PER_MONTH, publishable_curve

    # Eleven events up to and including day 30.4375 (month 1): a step there. Nine more by
    # month 2 are fewer than min_cell, so no step at month 2 and the curve ends at month 1
    # (counting the month-1 event again would make ten and show month 2).
    times = [*range(1, 11), DAYS_PER_MONTH, *range(31, 40)]
    out = publishable_curve(_steps(times, tail=70), RULES, survival=True)
    assert list(out["time"]) == [0.0, DAYS_PER_MONTH]
    # survival 0.89 (11 people: nearest 10, so 0.90), lower limit 0.84 (16 people: up to
    # 20, so 0.80), upper limit 0.94 (6 people: down to 0, so 1.0)
    assert list(out.iloc[1][["value", "ci_low", "ci_high"]]) == [0.90, 0.80, 1.0]
