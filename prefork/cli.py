"""The `prefork` command: read the settings, load the application, serve.

    prefork [OPTIONS] MODULE:OBJECT

Settings come from config.SETTINGS, in gunicorn's order of precedence: the
command line, then the PREFORK_CMD_ARGS environment variable (options, as on
the command line), then the config file (-c FILE: a Python file assigning
settings and defining hooks), then the defaults.  read_config() does all
that and checks every value; command.py builds and runs the server, and
reads the configuration again on HUP.

A user's mistake is one line on stderr and exit status 1 (--debug adds the
traceback); an error raised by the application's own code while it is
imported shows that code's traceback.
"""

import argparse
import difflib
import importlib
import os
import shlex
import sys
import traceback

from . import __version__, config, privileges
from .logfiles import describe_error

ENVIRONMENT_VARIABLE = "PREFORK_CMD_ARGS"

# The settings that are actions of this run rather than configuration.
ACTIONS = ("check_config", "print_config", "debug")

EPILOG = """\
signals to the master:
  TERM        graceful stop          INT, QUIT   quick stop
  HUP         reload: read the configuration again, start a new generation of
              workers, retire the old one once the new one serves
  TTIN, TTOU  one worker more, one fewer          USR1  reopen the log files
  USR2        binary upgrade: a new master on the same sockets; TERM the old one

prefork status / prefork ctl: ask a running master (see prefork status --help).

exit status: 0 stopped cleanly; 1 a startup error (or a worker had to be killed
at stop); 3 the workers could not boot.  See the README's "The prefork command".
"""


class UsageError(Exception):
    """A mistake in the command line, the environment or the config file."""


class Config:
    """The settings of one run: values (every setting, checked), hooks (from
    the config file), app (the MODULE:OBJECT spec), given (the names some
    source set: the others have their defaults)."""

    def __init__(self, values, hooks, app, given=()):
        self.values = values
        self.hooks = hooks
        self.app = app
        self.given = set(given)

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


class Parser(argparse.ArgumentParser):
    """argparse, its errors raised as UsageError (one line, exit status 1),
    an unknown option named with the closest one."""

    def error(self, message):
        raise UsageError(message)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        for extra in extras:
            if extra.startswith("-"):
                known = [flag for action in self._actions for flag in action.option_strings]
                close = difflib.get_close_matches(extra.split("=")[0], known, 1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UsageError(f"unknown option {extra}{hint}")
        if extras:
            raise UsageError(f"unexpected argument {extras[0]!r}: give one MODULE:OBJECT")
        return namespace


def build_parser():
    """The command's options, one per setting, grouped as --help shows them."""
    parser = Parser(prog="prefork", usage="prefork [OPTIONS] MODULE:OBJECT\n"
                     "       prefork status [--json] [--watch] [OPTIONS]\n"
                     "       prefork ctl reload|stop [--quick]|workers N|reopen [OPTIONS]",
                     description="Run a socketserver request handler, server class or WSGI "
                     "application with a pre-forking master.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", nargs="?", default=argparse.SUPPRESS, metavar="MODULE:OBJECT",
                        help="what to run: a request handler class, a server class, a WSGI "
                        "application, or MODULE:factory() returning one")
    parser.add_argument("--version", action="version", version=f"prefork {__version__}")
    groups = {name: parser.add_argument_group(name) for name in config.SECTIONS}
    for setting in config.SETTINGS.values():
        groups[setting.section].add_argument(*setting.flags, **_option(setting))
    return parser


def _option(setting):
    options = {"dest": setting.name, "default": argparse.SUPPRESS,
               "help": f"{setting.help} (default: {setting.shown})".replace("%", "%%")}
    if setting.kind is bool:
        options["action"] = "store_true" if setting.name in ACTIONS \
            else argparse.BooleanOptionalAction
    elif setting.kind == "binds":
        options["action"] = "append"
    if setting.choices:
        options["metavar"] = "{" + ",".join(setting.choices) + "}"
    elif setting.metavar:
        options["metavar"] = setting.metavar
    elif setting.kind is not bool:
        options["metavar"] = {int: "N", float: "SECONDS", "umask": "MODE"}.get(
            setting.kind, setting.name.upper())
    return options


def read_config(argv, environ=os.environ, need_app=True):
    """The settings for argv (the command line's arguments) and environ:
    a Config, every value checked; UsageError naming what is wrong (also if
    no application is named, with need_app)."""
    parser = build_parser()
    command_line = vars(parser.parse_args(argv))
    from_environment = _parse_environment(parser, environ)
    path = command_line.get("config", from_environment.get("config"))
    from_file, hooks = read_config_file(path) if path else ({}, {})
    values = {name: setting.default for name, setting in config.SETTINGS.items()}
    for where, source in ((f"config file {path}: ", from_file),
                          (f"${ENVIRONMENT_VARIABLE}: ", from_environment), ("", command_line)):
        for name, value in source.items():
            if name != "app":
                values[name] = _checked_value(where, config.SETTINGS[name], value)
    given = set(from_file) | set(from_environment) | set(command_line)
    if "control_socket" not in given:
        values["control_socket"] = config.default_control_socket(values, environ)
    app = command_line.get("app") or from_environment.get("app")
    if not app and need_app:
        raise UsageError("no application given: prefork [OPTIONS] MODULE:OBJECT "
                         "(prefork --help for more)")
    return Config(_checked(values), hooks, app, given)


def _parse_environment(parser, environ):
    text = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        return {}
    try:
        return vars(parser.parse_args(shlex.split(text)))
    except (UsageError, ValueError) as error:
        raise UsageError(f"${ENVIRONMENT_VARIABLE}: {error}") from None


def _convert(setting, value):
    """A value from the command line or a config file, as the setting's kind."""
    if setting.kind == "binds":
        if isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, (list, tuple)) else value
    if isinstance(value, str) and setting.kind is not str:
        return setting.parse(value)
    return value


def _checked_value(where, setting, value):
    """value, from where (a prefix for the message), as the setting's kind, checked."""
    try:
        return setting.check(_convert(setting, value))
    except ValueError as error:
        raise UsageError(f"{where}{error}") from None


def _checked(values):
    """values, once the settings that depend on one another agree."""
    try:
        privileges.identity(values["user"], values["group"])
        max_workers = config.check_workers(values["workers"], values["max_workers"])
        config.spare_scaler(values["workers"], values["min_workers"], max_workers,
                            values["spare_min"], values["spare_max"])
    except ValueError as error:
        raise UsageError(str(error)) from None
    threads = values["threads"]
    if threads > 1:
        if values["worker_class"] == "sync":
            values["worker_class"] = "threading"  # as gunicorn's sync -> gthread
        elif values["worker_class"] != "threading":
            raise UsageError(f"threads ({threads}) needs worker_class threading, "
                             f"not {values['worker_class']}")
        if values["max_threads"] is None:
            values["max_threads"] = threads
    if values["max_threads"] is not None and values["worker_class"] != "threading":
        raise UsageError(f"max_threads needs worker_class threading, "
                         f"not {values['worker_class']}")
    return values


def read_config_file(path):
    """(settings, hooks) assigned by the Python file at path, as gunicorn's
    config files: NAME = value for a setting, def HOOK(server, ...) for a hook.
    Other names (imports, helpers) are left alone."""
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except OSError as error:
        raise UsageError(f"config file {path}: {error.strerror}") from None
    namespace = {"__file__": os.path.abspath(path), "__name__": "__prefork_config__"}
    try:
        exec(compile(source, path, "exec"), namespace)
    except Exception as error:
        raise UsageError(f"config file {path}: {describe_error(error)}") from None
    settings, hooks = {}, {}
    for name, value in namespace.items():
        if name in config.HOOKS:
            if not callable(value):
                raise UsageError(f"config file {path}: hook {name} must be a function, "
                                 f"not {type(value).__name__}")
            hooks[name] = value
        elif name in config.SETTINGS:
            if not config.SETTINGS[name].file:
                raise UsageError(f"config file {path}: {name} can only be set on the "
                                 "command line")
            settings[name] = value
        elif not name.startswith("_") and _looks_like_a_setting(name, value):
            close = difflib.get_close_matches(name, list(config.SETTINGS) + config.HOOKS, 1)
            if close:
                raise UsageError(f"config file {path}: unknown setting {name!r} "
                                 f"(did you mean {close[0]!r}?)")
    return settings, hooks


def _looks_like_a_setting(name, value):
    return name.islower() and isinstance(value, (int, float, str, list, tuple, bool))


# -- the command ------------------------------------------------------------------

def main(argv=None):
    """Run the command; return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("status", "ctl"):
        from .client import main as client_main
        try:
            return client_main(argv)
        except UsageError as error:
            print(f"prefork: {error}", file=sys.stderr)
            return 1
    from .command import Command  # (the server side: not needed for --help)
    command = Command(argv)
    try:
        return command.run()
    except KeyboardInterrupt:
        return 130  # Ctrl-C before the master took over its signals
    except BrokenPipeError:  # (--print-config | head): the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:
        debug = command.config.debug if command.config else "--debug" in argv
        return report(error, debug)


def report(error, debug):
    """Tell a startup error: the traceback of the user's own code if it
    raised; one line for a user's mistake (the traceback too with debug).
    Anything else is prefork's own bug: raised, with its traceback."""
    from .command import STARTUP_ERRORS, ApplicationError
    if isinstance(error, ApplicationError):
        cause = error.__cause__
        print("prefork: the application raised an error while loading:", file=sys.stderr)
        traceback.print_exception(type(cause), cause, _users_part(cause.__traceback__))
        return 1
    if not isinstance(error, STARTUP_ERRORS):
        raise error
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"prefork: {error}", file=sys.stderr)
    return 1


def _users_part(tb):
    """The traceback from the first frame outside prefork and importlib."""
    ours = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(importlib.__file__))
    while tb is not None and tb.tb_next is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith("<frozen") or os.path.dirname(filename) in ours):
            break
        tb = tb.tb_next
    return tb


def describe(cfg, app):
    """--check-config's summary: what would run."""
    values = cfg.values
    kind = values["worker_class"]
    if kind == "threading":
        kind += f", at most {values['max_threads']} requests at once" \
            if values["max_threads"] else ", threads unbounded"
    lines = [f"application  {app.describe()}",
             f"bind         {', '.join(values['bind'])}",
             f"workers      {values['workers']} ({kind})"]
    if values["user"] or values["group"]:
        lines.append(f"user/group   {values['user'] or '-'}/{values['group'] or '-'}")
    if values["pidfile"]:
        lines.append(f"pidfile      {values['pidfile']}")
    if cfg.hooks:
        lines.append(f"hooks        {', '.join(sorted(cfg.hooks))}")
    return "\n".join(lines)


def print_config(cfg):
    """--print-config: every setting, as a config file would assign it."""
    for name, value in cfg.values.items():
        if name not in ACTIONS and name != "config":
            print(f"{name} = {value!r}")
    print(f"# application: {cfg.app}")
