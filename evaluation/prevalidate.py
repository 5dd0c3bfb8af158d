"""`python -m evaluation.prevalidate CONFIG DROP ROOT`: validate every pending delivery of the
drop folder into the validation store at ROOT, in a process of its own. `dpf-eval run` starts
this before it loads Dagster (see `evaluation.validation_store`).

The great-expectations worker is started first, before this process imports anything heavy:
its chain (importing great-expectations, ~3.5 s of CPU, then the suites) decides when a small
study's validation ends, and starting it ~0.6 s sooner shortened the time until the
evaluation starts by about 1 s (BENCHMARKS.md).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor


def start_suite_worker() -> ProcessPoolExecutor:
    """A process that imports great-expectations at once, then runs the suites it is given."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # the worker inherits it
    worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    worker.submit(importlib.import_module, "great_expectations")
    return worker


def main(argv: list[str]) -> int:
    worker = start_suite_worker()
    try:
        from evaluation.validation_store import prevalidate

        return prevalidate(*argv[:3], worker=worker)
    finally:
        # Not waiting for the worker to exit (~0.5 s) lets this process report sooner; the
        # interpreter still waits for it (and for its import to finish) before exiting.
        worker.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
