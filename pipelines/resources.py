"""Resources shared by every asset: the study (config and folders, and the single-writer
lock on the output folder) and the IO manager."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from assets.metadata import frame_metadata
from evaluation.config import StudyConfig, load_config
from evaluation.filemodes import prepare_out
from evaluation.validation_store import ValidationStore, validation_root
from pipelines.output_lock import output_lock

DEFAULT_CONFIG = "config/pilot.yaml"
DEFAULT_DROP = "var/drop"
DEFAULT_OUT = "var/out"

# Called with (instance, run id) as each run's StudyResource is set up in this process: the
# CLI's window on the runs it starts (its progress lines; the tests' kill points).
RUN_STARTED: list[Callable[[dg.DagsterInstance, str], None]] = []


class StudyResource(dg.ConfigurableResource):
    """Which study this code location evaluates: its config file, drop folder and output folder.

    Set from the environment (DPF_CONFIG, DPF_DROP, DPF_OUT) in the UI; the CLI passes them.
    """

    config_path: str = DEFAULT_CONFIG
    drop: str = DEFAULT_DROP
    out: str = DEFAULT_OUT
    _writing: contextlib.ExitStack | None = PrivateAttr(default=None)

    @cached_property
    def cfg(self) -> StudyConfig:
        return load_config(self.config_path)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Before any step writes: restricted folders owner-only, the output folder readable.
        prepare_out(Path(self.out))
        # Every run that writes this study's outputs holds the output folder's lock until its
        # last step is done: a UI-launched or scheduled run and a CLI run never overlap.
        self._writing = contextlib.ExitStack()
        self._writing.enter_context(output_lock(Path(self.out), context.log.warning))
        for started in RUN_STARTED:
            started(context.instance, context.run_id)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._writing is not None:
            self._writing.close()
            self._writing = None

    @property
    def restricted(self) -> Path:
        return Path(self.out) / "restricted"

    @property
    def published(self) -> Path:
        return Path(self.out) / "published"

    @property
    def raw_store(self) -> Path:
        """Typed copies of each delivery's tables (Parquet), by force and extract date."""
        return self.restricted / "raw"

    @property
    def validation_store(self) -> Path:
        """One validation report (JSON) per delivery and content hash."""
        return validation_root(self.out)

    @cached_property
    def validation(self) -> ValidationStore:
        return ValidationStore(self.validation_store, Path(self.drop), self.cfg)


class TableIOManager(dg.ConfigurableIOManager):
    """Stores polars frames as Parquet and anything else as a pickle, under the restricted
    store, one file per asset. Writes go to a temporary file that is then renamed, so a run
    killed midway never leaves half a file. (dagster-polars does not support polars 2.)
    Every stored frame's row count and column schema is recorded as asset metadata, unless
    the asset recorded its own.
    """

    base_dir: str

    def _path(self, key: dg.AssetKey, suffix: str) -> Path:
        return Path(self.base_dir).joinpath(*key.path).with_suffix(suffix)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        is_table = isinstance(obj, pl.DataFrame)
        path = self._path(context.asset_key, ".parquet" if is_table else ".pickle")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            if is_table:
                obj.write_parquet(tmp)
            else:
                with tmp.open("wb") as f:
                    pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            # A failed write (full disk, interrupted) leaves the previous file, not debris.
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if is_table:
            given = context.output_metadata or {}
            # Row count and the column schema, described by the data dictionary under the
            # asset's name; the UI shows them on the asset's page.
            name = context.asset_key.to_user_string()
            context.add_output_metadata(
                {k: v for k, v in frame_metadata(name, obj).items() if k not in given}
            )

    def load_input(self, context: dg.InputContext) -> Any:
        parquet = self._path(context.asset_key, ".parquet")
        if parquet.exists():
            return pl.read_parquet(parquet)
        stored = self._path(context.asset_key, ".pickle")
        if not stored.exists():
            # e.g. the weekly data-quality run publishes the latest evaluation report, and
            # there is none before the first evaluation run
            name = context.asset_key.to_user_string()
            raise FileNotFoundError(
                f"{name} has not been materialised yet (nothing stored at {stored}): "
                "run the evaluation job first"
            )
        with stored.open("rb") as f:
            return pickle.load(f)
