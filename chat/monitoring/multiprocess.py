"""`/metrics` over several workers: prometheus-client's multiprocess mode.

`chat serve --workers N` (N > 1) gives its workers a fresh private directory in
`PROMETHEUS_MULTIPROC_DIR` before they start (`prepare`). prometheus-client then
keeps every metric of every worker in a memory-mapped file there, and the worker
answering `/metrics` adds them all up (`render`): counters and histograms over every
worker that ever ran (a restarted worker's counts are kept), gauges by their
`multiprocess_mode` (`chat.monitoring.metrics`). A worker that stops drops its live
gauges (`process_exited`); one that was killed has them dropped by the next worker
to start (`forget_dead_processes`). The directory is removed when `chat serve` ends.

One process (no `--workers`) keeps the ordinary in-memory registry.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def prepare() -> Path:
    """A fresh private directory for the workers' metric files, set in the environment.

    Call before the workers start (they inherit the variable and read it when they
    import prometheus-client), never in a process that serves itself.
    """
    directory = Path(tempfile.mkdtemp(prefix="chat-metrics-"))  # mode 0700, empty
    os.environ[ENV] = str(directory)
    return directory


def cleanup(directory: Path) -> None:
    """Remove the directory `prepare` made (when `chat serve` ends)."""
    if os.environ.get(ENV) == str(directory):
        del os.environ[ENV]
    shutil.rmtree(directory, ignore_errors=True)


def _directory() -> str | None:
    return os.environ.get(ENV) or None


def render() -> bytes:
    """The Prometheus text of this process, or of every worker in multiprocess mode."""
    if _directory() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exited() -> None:
    """Drop this process's live gauges (its counters stay in the totals)."""
    directory = _directory()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def forget_dead_processes() -> None:
    """Drop the live gauges of workers that died without `process_exited` (kill -9)."""
    directory = _directory()
    if directory is None:
        return
    pids = {int(m[1]) for f in os.listdir(directory) if (m := _LIVE_FILE.match(f))}
    for pid in pids - {os.getpid()}:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not one of ours, but alive
    return True
