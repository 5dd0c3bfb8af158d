"""Building the published outputs (HTML reports and their CSV tables) from the restricted
results. Disclosure control (`evaluation.disclosure`) is applied before anything reaches a
template, and the language check runs on every file before any is written.

* `evaluation_report`: published/evaluation-report.html
* `force_reports`: published/force-<CODE>.html, one per pilot force
* `data_quality`: published/data-quality.html

Each page's tables are also published as `<page>-<table>.csv`.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.config import StudyConfig
from evaluation.publish.common import LanguageError, publish_files, write_published
from evaluation.publish.data_quality import render_data_quality_report
from evaluation.publish.evaluation_report import render_evaluation_report
from evaluation.publish.force_reports import render_force_reports
from evaluation.publish.inputs import ReportInputs, load_inputs, make_inputs

__all__ = [
    "LanguageError",
    "ReportInputs",
    "load_inputs",
    "make_inputs",
    "publish_all",
    "publish_data_quality_report",
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
