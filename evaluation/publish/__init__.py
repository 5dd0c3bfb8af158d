"""Building the published outputs (HTML reports and their CSV tables) from the restricted
results. Disclosure control (`evaluation.disclosure`) is applied before anything reaches a
template, and the language check runs on every file before any is written.

* `evaluation_report`: evaluation-report.html (and the edition's record, edition.json)
* `force_reports`: force-<CODE>.html, one per pilot force
* `data_quality`: data-quality.html

Each page's tables are also published as `<page>-<table>.csv`. A run renders the pages
(`*_pages`: file name -> text, nothing written) and then publishes all of them as one
edition (`publish_edition`: published/editions/<edition>/, with a PDF of each page,
published/current and published/index.html).
"""

from __future__ import annotations

from pathlib import Path

from evaluation.config import StudyConfig
from evaluation.publish.common import LanguageError, check_files, publish_files, write_published
from evaluation.publish.data_quality import render_data_quality_report
from evaluation.publish.edition import publish_edition
from evaluation.publish.evaluation_report import render_evaluation_report
from evaluation.publish.force_reports import render_force_reports
from evaluation.publish.inputs import ReportInputs, load_inputs, make_inputs

__all__ = [
    "LanguageError",
    "ReportInputs",
    "check_files",
    "data_quality_pages",
    "evaluation_report_pages",
    "force_pages",
    "load_inputs",
    "make_inputs",
    "publish_all",
    "publish_data_quality_report",
    "publish_edition",
    "publish_evaluation_report",
    "publish_force_reports",
    "render_all",
    "write_published",
]


def publish_evaluation_report(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> list[Path]:
    """Write published/evaluation-report.html and its CSVs; returns the paths (HTML first)."""
    return publish_files(render_evaluation_report(inputs, cfg, out), cfg)


def publish_force_reports(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> list[Path]:
    """Write published/force-<CODE>.html (one per pilot force) and their CSVs."""
    return publish_files(render_force_reports(inputs, cfg, out), cfg)


def publish_data_quality_report(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> list[Path]:
    """Write published/data-quality.html and its CSVs."""
    return publish_files(render_data_quality_report(inputs, cfg, out), cfg)


def _by_name(files: dict[Path, str]) -> dict[str, str]:
    return {path.name: text for path, text in files.items()}


def evaluation_report_pages(
    inputs: ReportInputs, cfg: StudyConfig, previous: tuple[str, dict | None] | None = None
) -> dict[str, str]:
    """evaluation-report.html, its CSVs and the edition's record, by file name (nothing
    written); `previous`: the newest published edition (`changes.previous_edition`)."""
    return _by_name(render_evaluation_report(inputs, cfg, Path(), previous))


def force_pages(inputs: ReportInputs, cfg: StudyConfig) -> dict[str, str]:
    """force-<CODE>.html (one per pilot force) and their CSVs, by file name."""
    return _by_name(render_force_reports(inputs, cfg, Path()))


def data_quality_pages(inputs: ReportInputs, cfg: StudyConfig) -> dict[str, str]:
    """data-quality.html and its CSVs, by file name."""
    return _by_name(render_data_quality_report(inputs, cfg, Path()))


def render_all(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> dict[Path, str]:
    """Every published file's text, keyed by path (nothing written)."""
    return {
        **render_evaluation_report(inputs, cfg, out),
        **render_force_reports(inputs, cfg, out),
        **render_data_quality_report(inputs, cfg, out),
    }


def publish_all(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> list[Path]:
    """Render, check and write every published file (nothing written if any check fails)."""
    return publish_files(render_all(inputs, cfg, out), cfg)
