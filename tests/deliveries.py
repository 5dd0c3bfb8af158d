"""A small, valid, realistic delivery built in code, with hooks to break it.

`write_delivery(drop)` writes `<drop>/<force>/<extract_date>/` with the five tables (about 30
people) and a manifest holding each file's rows and sha256. Hooks, applied in this order:

- `edit_tables(tables)`: change the text frames (every cell a string, None = empty);
- `edit_bytes(files)`: change the serialised files (name -> bytes) before the manifest is
  computed, so only the file's content is wrong, not its hash;
- `edit_manifest(manifest)`: change the manifest after it is computed.

Independent of `evaluation.synth` and of the reader under test: the data are written with
plain polars and hashlib (only the column types come from `evaluation.schema`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import random
from collections.abc import Callable
from pathlib import Path

import polars as pl

from evaluation.schema import TABLE_COLUMNS

FORCE = "ASH"
EXTRACT_DATE = "2026-09-30"
PERIOD_START = "2021-01-01"

SEX = ("male",) * 19 + ("female",)
ETHNICITY = ("asian", "black", "mixed", "white", "white", "white", "other", "not_stated")
OFFENCE = ("contact_adult", "contact_child", "non_contact", "indecent_images", "online_child")
RISK = ("low", "medium", "high", "very_high")
END_REASON = ("notification_ended", "died", "transferred_out", "custody", "other")
CONTACT_TYPE = ("home_visit", "unannounced_visit", "office", "phone", "video", "multi_agency")
REFERRAL = ("none", "none", "none", "mental_health", "housing", "employment", "other")
EVENT_TYPE = ("sexual_offence", "other_offence", "notification_breach", "order_breach", "recall")
EMPLOYMENT = ("employed", "unemployed", "unable_to_work", "retired", "unknown")
ACCOMMODATION = ("settled", "settled", "unsettled", "homeless", "approved_premises")

# For Parquet: the contract's type of every column (the schema is the contract, as data).
DTYPES = {c.name: c.dtype for cols in TABLE_COLUMNS.values() for c in cols}


def _day(rng: random.Random, lo: dt.date, hi: dt.date) -> dt.date:
    return lo + dt.timedelta(days=rng.randint(0, max((hi - lo).days, 0)))


def _bool(rng: random.Random, p: float = 0.5) -> str:
    return "true" if rng.random() < p else "false"


def valid_tables(
    n_people: int = 30,
    seed: int = 7,
    extract_date: str = EXTRACT_DATE,
    contacts_per_person: tuple[int, int] = (2, 6),
) -> dict[str, pl.DataFrame]:
    """The five tables as text frames (all columns pl.String), valid under the contract."""
    rng = random.Random(seed)
    # Pseudonyms from their own stream: the same people in every delivery of one seed.
    ids = random.Random(seed * 7919 + 1)
    extract = dt.date.fromisoformat(extract_date)
    people, assessments, contacts, events, circumstances = [], [], [], [], []
    for _ in range(n_people):
        pid = f"{ids.getrandbits(64):016x}"
        start = _day(rng, dt.date(2016, 1, 1), extract - dt.timedelta(days=120))
        end = None
        if rng.random() < 0.3:
            candidate = start + dt.timedelta(days=rng.randint(90, 1500))
            end = candidate if candidate < extract - dt.timedelta(days=10) else None
        prior = rng.randint(0, 12)
        people.append(
            {
                "person_id": pid,
                "sex": rng.choice(SEX),
                "birth_year": str(rng.randint(1950, 1998)),
                "ethnicity": rng.choice(ETHNICITY),
                "index_offence": rng.choice(OFFENCE),
                "prior_convictions": str(prior),
                "prior_sexual_convictions": str(rng.randint(0, min(prior, 3))),
                "static_risk": rng.choice(RISK) if rng.random() < 0.9 else None,
                "mappa_category": str(rng.choice((1, 1, 1, 2, 3))),
                "mappa_level": str(rng.choice((1, 1, 1, 2, 3))),
                "notification_start": str(start - dt.timedelta(days=rng.randint(0, 60))),
                "notification_end": (
                    str(start + dt.timedelta(days=3650)) if rng.random() < 0.3 else None
                ),
                "management_start": str(start),
                "management_end": str(end) if end else None,
                "management_end_reason": rng.choice(END_REASON) if end else None,
                "on_licence": _bool(rng, 0.4),
            }
        )
        last = end or extract
        for _ in range(rng.randint(1, 3)):
            assessments.append(
                {
                    "assessment_id": f"as-{len(assessments) + 1:06d}",
                    "person_id": pid,
                    "assessment_date": str(_day(rng, start, last)),
                    "risk_level": rng.choice(RISK),
                    "risk_factors": str(rng.randint(0, 7)),
                    "protective_factors": str(rng.randint(0, 4)),
                }
            )
        for _ in range(rng.randint(*contacts_per_person)):
            contacts.append(
                {
                    "contact_id": f"ct-{len(contacts) + 1:06d}",
                    "person_id": pid,
                    "contact_date": str(_day(rng, start, last)),
                    "contact_type": rng.choice(CONTACT_TYPE),
                    "officer_id": f"off-{rng.randint(1, 8):04d}",
                    "officer_trained": _bool(rng),
                    "dmp_reviewed": _bool(rng, 0.3),
                    "goals_agreed": str(rng.randint(0, 3)),
                    "referral": rng.choice(REFERRAL),
                    "duration_minutes": str(rng.randint(10, 120)),
                }
            )
        if rng.random() < 0.4:
            when = _day(rng, start, last)
            disposal = when + dt.timedelta(days=rng.randint(30, 200))
            proven = rng.random() < 0.6 and disposal <= extract
            events.append(
                {
                    "event_id": f"ev-{len(events) + 1:05d}",
                    "person_id": pid,
                    "event_date": str(when),
                    "event_type": rng.choice(EVENT_TYPE),
                    "proven": "true" if proven else "false",
                    "disposal_date": str(disposal) if proven else None,
                }
            )
        dates = sorted({_day(rng, start, last) for _ in range(rng.randint(1, 3))})
        for when in dates:
            circumstances.append(
                {
                    "person_id": pid,
                    "record_date": str(when),
                    "employment": rng.choice(EMPLOYMENT),
                    "accommodation": rng.choice(ACCOMMODATION),
                    "positive_relationship": _bool(rng) if rng.random() < 0.8 else None,
                    "community_activity": _bool(rng, 0.3) if rng.random() < 0.8 else None,
                    "mental_health_support": _bool(rng, 0.2) if rng.random() < 0.8 else None,
                }
            )
    rows = {
        "people": people,
        "assessments": assessments,
        "contacts": contacts,
        "events": events,
        "circumstances": circumstances,
    }
    return {t: pl.DataFrame(r, schema={k: pl.String for k in r[0]}) for t, r in rows.items()}


def set_cells(df: pl.DataFrame, column: str, rows: list[int], value: str | None) -> pl.DataFrame:
    """Set a column's cells at 0-based `rows` to `value` (a new column if it is not there)."""
    current = pl.col(column) if column in df.columns else pl.lit(None, dtype=pl.String)
    return df.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(rows))
        .then(pl.lit(value, dtype=pl.String))
        .otherwise(current)
        .alias(column)
    )


def csv_bytes(df: pl.DataFrame) -> bytes:
    """RFC 4180 CSV with a header line, empty cells for missing values."""
    return df.write_csv(line_terminator="\n").encode("utf-8")


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """Parquet with the contract's types (ints, dates and booleans typed, the rest text)."""
    exprs = []
    for c in df.columns:
        dtype = DTYPES.get(c)
        if dtype == "int":
            exprs.append(pl.col(c).cast(pl.Int64))
        elif dtype == "date":
            exprs.append(pl.col(c).str.to_date("%Y-%m-%d"))
        elif dtype == "bool":
            exprs.append(pl.col(c).replace_strict({"true": True, "false": False}, default=None))
        else:
            exprs.append(pl.col(c))
    buf = io.BytesIO()
    df.select(exprs).write_parquet(buf)
    return buf.getvalue()


def write_delivery(
    drop: Path,
    *,
    force: str = FORCE,
    extract_date: str = EXTRACT_DATE,
    n_people: int = 30,
    seed: int = 7,
    fmt: str = "csv",
    tables: dict[str, pl.DataFrame] | None = None,
    edit_tables: Callable[[dict[str, pl.DataFrame]], None] | None = None,
    edit_bytes: Callable[[dict[str, bytes]], None] | None = None,
    edit_manifest: Callable[[dict], None] | None = None,
) -> Path:
    """Write one delivery folder under `drop`; returns its path."""
    tables = dict(tables or valid_tables(n_people, seed, extract_date))
    if edit_tables:
        edit_tables(tables)
    serialise = parquet_bytes if fmt == "parquet" else csv_bytes
    files = {f"{t}.{fmt}": serialise(df) for t, df in tables.items()}
    if edit_bytes:
        edit_bytes(files)
    manifest = {
        "schema_version": "1.0",
        "force_code": force,
        "extract_date": extract_date,
        "period_start": PERIOD_START,
        "period_end": extract_date,
        "files": {
            name: {
                "rows": tables[name.split(".")[0]].height,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for name, data in files.items()
        },
    }
    if edit_manifest:
        edit_manifest(manifest)
    folder = Path(drop) / force / extract_date
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file's bytes under a folder, to prove a check changed nothing (a
    file over 64 MB, such as a sparse file standing for a huge one, by its size and time)."""

    def digest(p: Path) -> str:
        st = p.stat()
        if st.st_size > 1 << 26:
            return f"{st.st_size}:{st.st_mtime_ns}"
        return hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}
