"""The prefork logger, and log files that can be reopened after rotation (USR1)."""

import logging
import sys

log = logging.getLogger("prefork")

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"


def configure_default_logging():
    """Log prefork's messages to stderr, gunicorn-style, unless the application
    has configured logging itself."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S %z"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def reopen():
    """Reopen every file that a logging.FileHandler writes to (after logrotate
    moved it away), in this process."""
    loggers = [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)]
    file_handlers = {handler for logger in loggers for handler in logger.handlers
                     if isinstance(handler, logging.FileHandler)}
    for handler in file_handlers:
        stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding,
                      errors=handler.errors)
        old = handler.setStream(stream)
        if old is not None:
            old.close()
    log.info("reopened log files")
