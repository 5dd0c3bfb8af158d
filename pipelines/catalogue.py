"""What the Dagster UI's catalogue shows about each asset beyond its description and kinds:
who owns it, where its code is, and by when a published report must be rebuilt.

Applied once to every asset in `definitions.py`, so the asset modules stay about what they
compute. (Row counts and column schemas are recorded at materialisation by the IO manager.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

OWNERS = ["team:evaluation"]
# Published reports are due a few hours after the scheduled run that builds them; one not
# rebuilt since that run started is late. The monthly evaluation runs at 06:00 on the 3rd,
# the weekly data-quality run at 07:00 on Mondays (the schedules in definitions.py).
MONTHLY_REPORT_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 18 3 * *",
    lower_bound_delta=timedelta(hours=12),
    timezone="Europe/London",
)
WEEKLY_REPORT_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 12 * * 1",
    lower_bound_delta=timedelta(hours=5),
    timezone="Europe/London",
)
WEEKLY_REPORTS = {"data_quality_report"}


def is_published_report(spec: dg.AssetSpec) -> bool:
    """A report for stakeholders: an HTML asset of the `reports` group."""
    return spec.group_name == "reports" and "html" in spec.kinds


def _annotate(spec: dg.AssetSpec) -> dg.AssetSpec:
    freshness = spec.freshness_policy
    if freshness is None and is_published_report(spec):
        weekly = spec.key.to_user_string() in WEEKLY_REPORTS
        freshness = WEEKLY_REPORT_FRESHNESS if weekly else MONTHLY_REPORT_FRESHNESS
    return spec.replace_attributes(owners=list(spec.owners) or OWNERS, freshness_policy=freshness)


def catalogue(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every asset with an owner, a link to its source (file and line) and, for published
    reports, a freshness policy. Owners or policies an asset declares itself are kept."""
    with warnings.catch_warnings():
        # Code references are a beta API of Dagster; the UI link is worth the warning.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(dg.map_asset_specs(_annotate, assets)))
