"""The prefork logger, log files that can be reopened after rotation (USR1), and
how an error in the user's code is told in one line."""

import logging
import os
import sys
import traceback

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


def describe_error(error):
    """One line for an error raised in the user's code: the exception, then
    where in the user's code -- file, line and the line itself -- as Python's
    own traceback would show (for a SyntaxError, the file being compiled)."""
    text = traceback.format_exception_only(type(error), error)[-1].strip()
    if isinstance(error, SyntaxError) and error.filename:
        source = (error.text or "").strip()
        return f"{text} (at {error.filename}, line {error.lineno}: {source})"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith("<frozen") and not _in_prefork(frame.filename)]
    if frames:
        where = frames[-1]
        return f"{text} (at {where.filename}, line {where.lineno}: {where.line})"
    return text


def _in_prefork(filename):
    return os.path.dirname(os.path.abspath(filename)) == os.path.dirname(os.path.abspath(__file__))
