"""The prefork logger, the access log, log files that can be reopened after
rotation (USR1), and how an error in the user's code is told in one line."""

import logging
import os
import sys
import traceback

log = logging.getLogger("prefork")
access_log = logging.getLogger("prefork.access")
access_log.propagate = False  # its own destination (configure()), off until given one
access_log.disabled = True

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
ACCESS_FORMAT = "[%(asctime)s] [%(process)d] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def configure_default_logging():
    """Log prefork's messages to stderr, gunicorn-style, unless the application
    has configured logging itself."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def configure(level, error_logfile, access_logfile):
    """The prefork command's logging: the error log at level ("-": stderr),
    the access log (None: off; "-": stdout).  Called again on a reload: the
    handlers are replaced."""
    _replace_handler(log, _handler(error_logfile, sys.stderr, LOG_FORMAT))
    log.setLevel(level)
    log.propagate = False  # its own destination, whatever the application does with logging
    access_log.disabled = access_logfile is None
    _replace_handler(access_log, None if access_logfile is None else
                     _handler(access_logfile, sys.stdout, ACCESS_FORMAT))
    access_log.setLevel(logging.INFO)


def _handler(destination, stream, format):
    if destination == "-":
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.FileHandler(destination, encoding="utf-8")
    handler.setFormatter(logging.Formatter(format, DATE_FORMAT))
    return handler


def _replace_handler(logger, handler):
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    if handler is not None:
        logger.addHandler(handler)


def log_access(client, worker, request, status, size, seconds):
    """One line of the access log: client, worker, request (an HTTP request
    line, or "-"), status, bytes sent ("-" where unknown), duration."""
    access_log.info('%s [worker %s] "%s" %s %s %.3fms', client, worker, request, status,
                    size, seconds * 1000)


def reopen():
    """Reopen every file that a logging.FileHandler writes to (after logrotate
    moved it away), in this process."""
    loggers = [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)]
    file_handlers = {handler for logger in loggers for handler in logger.handlers
                     if isinstance(handler, logging.FileHandler)}
    for handler in file_handlers:
        try:
            stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding,
                          errors=handler.errors)
        except OSError as error:  # (a worker run as another user, say): keep the old one
            log.warning("Could not reopen %s: %s", handler.baseFilename, error)
            continue
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
