"""Keep secrets out of the access log: a stream ticket travels in the URL
(`GET /api/stream?ticket=...`, for `EventSource`), and uvicorn logs URLs."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = re.compile(r"(?<=[?&])(ticket|token|access_token)=[^&\s]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Replaces the value of secret query parameters in log records with `***`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("=" in str(a) for a in record.args):
            record.args = tuple(
                SECRET_PARAMS.sub(r"\1=***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def install(logger_name: str = "uvicorn.access") -> None:
    """Add the filter to `logger_name` once (the app may be built more than once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
