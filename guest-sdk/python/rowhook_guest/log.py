"""Structured log lines in rowhook's log, labelled with the handler.

>>> from rowhook_guest import log
>>> log.info("order paid", order=42, amount="12.50")

Field values are written with ``str()``. rowhook keeps at most 10,000 lines
per call; a log call never fails.
"""

from ._host import host

TRACE, DEBUG, INFO, WARN, ERROR = range(5)


def log(level, message, **fields):
    """Writes ``message`` with ``fields`` at ``level`` (``TRACE`` ... ``ERROR``)."""
    host.log(level, message, [(k, str(v)) for k, v in fields.items()])


def trace(message, **fields):
    """Step-by-step detail."""
    host.log(TRACE, message, [(k, str(v)) for k, v in fields.items()])


def debug(message, **fields):
    """Detail for development."""
    host.log(DEBUG, message, [(k, str(v)) for k, v in fields.items()])


def info(message, **fields):
    """Normal operation."""
    host.log(INFO, message, [(k, str(v)) for k, v in fields.items()])


def warn(message, **fields):
    """Something unexpected the handler dealt with."""
    host.log(WARN, message, [(k, str(v)) for k, v in fields.items()])


def error(message, **fields):
    """Something failed."""
    host.log(ERROR, message, [(k, str(v)) for k, v in fields.items()])
