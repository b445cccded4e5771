"""Export files: the one place their path is built, found for download, and pruned.

An export task writes `<state dir>/exports/<task id>.<format>` through a `.part` file
renamed when complete; `GET /api/tasks/{id}/result` serves it; the task watcher deletes
files older than `export_retention_days`. The name is the task id, never user input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chat.config import Settings

log = logging.getLogger(__name__)

FOLDER = "exports"  # under the state dir
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class ExportFiles:
    """The export files of one server: where they are written and how long they are kept."""

    folder: Path
    retention_days: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportFiles:
        return cls(settings.state_dir / FOLDER, settings.export_retention_days)

    def path(self, task_id: str, fmt: str) -> Path:
        """Where the finished file of export task `task_id` lives."""
        return self.folder / f"{task_id}.{fmt}"

    def partial(self, task_id: str, fmt: str) -> Path:
        """The file being written; renamed to `path` once complete."""
        final = self.path(task_id, fmt)
        return final.with_suffix(final.suffix + ".part")

    def finished(self, task_id: str, fmt: str) -> Path | None:
        """The complete file, or None when the format is unknown or the file is gone."""
        if fmt not in MEDIA_TYPES:
            return None
        path = self.path(task_id, fmt)
        return path if path.is_file() else None

    def prune(self) -> int:
        """Delete files older than the retention (stale partials too); how many went."""
        cutoff = time.time() - self.retention_days * 86400
        removed = 0
        try:
            entries = list(self.folder.iterdir())
        except FileNotFoundError:
            return 0
        for path in entries:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("could not prune %s: %r", path.name, exc)
        if removed:
            log.info("pruned %d export file(s) older than the retention", removed)
        return removed
