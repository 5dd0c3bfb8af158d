"""The extract contract (extract-spec.md, version 1.1) as data: the one source of every table's
columns, types, enums and ranges. Readers, validators, the generator and the GX suites in
`expectations/` all derive from this module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

SCHEMA_VERSION = "1.0"
TABLES: tuple[str, ...] = ("people", "assessments", "contacts", "events", "circumstances")

RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high", "very_high")
EVENT_TYPES: tuple[str, ...] = (
    "sexual_offence",
    "other_offence",
    "notification_breach",
    "order_breach",
    "recall",
)
END_REASONS: tuple[str, ...] = (
    "notification_ended",
    "died",
    "transferred_out",
    "custody",
    "removed_from_register",
    "other",
)
CONTACT_TYPES: tuple[str, ...] = (
    "home_visit",
    "unannounced_visit",
    "office",
    "phone",
    "video",
    "multi_agency",
)
REFERRALS: tuple[str, ...] = (
    "none",
    "mental_health",
    "housing",
    "employment",
    "substance_misuse",
    "relationships",
    "other",
)
ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
EARLIEST_DATE = dt.date(1950, 1, 1)  # a date before it is blocking (extract-spec 1.1)


@dataclass(frozen=True)
class Column:
    """One column of an extract table.

    dtype is one of "str", "int", "date", "bool", "enum". `required` False means empty cells
    are allowed; "iff:<col>" conditions are checked by the validator's cross-column rules.
    `min` and `max` are the blocking plausible range; values above `warn_above` are possible
    but implausible (a warning). Every int column has a range or an enum and every date a
    lower bound, so that no single value can make a model unusable (bounds that depend on
    the extract date are checked by `evaluation.validation`); every text value is held to
    the study's `limits.value_chars`.
    """

    name: str
    dtype: str
    required: bool = True
    enum: tuple[str, ...] | tuple[int, ...] | None = None
    min: int | dt.date | None = None
    max: int | dt.date | None = None
    warn_above: int | None = None
    unique: bool = False
    pattern: str | None = None


TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "people": (
        Column("person_id", "str", unique=True, pattern=ID_PATTERN),
        Column("sex", "enum", enum=("male", "female", "other", "unknown")),
        Column("birth_year", "int", min=1920),  # max = extract year - 10, set per delivery
        Column(
            "ethnicity",
            "enum",
            enum=("asian", "black", "mixed", "white", "other", "not_stated"),
        ),
        Column(
            "index_offence",
            "enum",
            enum=(
                "contact_adult",
                "contact_child",
                "non_contact",
                "indecent_images",
                "online_child",
                "other",
            ),
        ),
        Column("prior_convictions", "int", min=0, max=150, warn_above=60),
        # At most prior_convictions (a within-row rule), so at most 150 too.
        Column("prior_sexual_convictions", "int", min=0, max=150),
        Column("static_risk", "enum", required=False, enum=RISK_LEVELS),
        Column("mappa_category", "int", enum=(1, 2, 3)),
        Column("mappa_level", "int", enum=(1, 2, 3)),
        Column("notification_start", "date", min=EARLIEST_DATE),
        Column("notification_end", "date", required=False, min=EARLIEST_DATE),
        Column("management_start", "date", min=EARLIEST_DATE),
        Column("management_end", "date", required=False, min=EARLIEST_DATE),
        Column("management_end_reason", "enum", required=False, enum=END_REASONS),
        Column("on_licence", "bool"),
    ),
    "assessments": (
        Column("assessment_id", "str", unique=True),
        Column("person_id", "str"),
        Column("assessment_date", "date", min=EARLIEST_DATE),
        Column("risk_level", "enum", enum=RISK_LEVELS),
        Column("risk_factors", "int", min=0, max=7),
        Column("protective_factors", "int", min=0, max=4),
    ),
    "contacts": (
        Column("contact_id", "str", unique=True),
        Column("person_id", "str"),
        Column("contact_date", "date", min=EARLIEST_DATE),
        Column("contact_type", "enum", enum=CONTACT_TYPES),
        Column("officer_id", "str"),
        Column("officer_trained", "bool"),
        Column("dmp_reviewed", "bool"),
        Column("goals_agreed", "int", min=0, max=50),
        Column("referral", "enum", enum=REFERRALS),
        Column("duration_minutes", "int", min=1, max=600),
    ),
    "events": (
        Column("event_id", "str", unique=True),
        Column("person_id", "str"),
        Column("event_date", "date", min=EARLIEST_DATE),
        Column("event_type", "enum", enum=EVENT_TYPES),
        Column("proven", "bool"),
        Column("disposal_date", "date", required=False, min=EARLIEST_DATE),
    ),
    "circumstances": (
        Column("person_id", "str"),
        Column("record_date", "date", min=EARLIEST_DATE),
        Column(
            "employment",
            "enum",
            enum=("employed", "unemployed", "unable_to_work", "retired", "unknown"),
        ),
        Column(
            "accommodation",
            "enum",
            enum=("settled", "unsettled", "homeless", "approved_premises", "unknown"),
        ),
        Column("positive_relationship", "bool", required=False),
        Column("community_activity", "bool", required=False),
        Column("mental_health_support", "bool", required=False),
    ),
}


def column_names(table: str) -> list[str]:
    """The contract's column names of a table, in the spec's order."""
    return [c.name for c in TABLE_COLUMNS[table]]
