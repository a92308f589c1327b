"""The prefork settings: ONE table of name, default, check, flag and help.

Two kinds of setting share the table:

* server settings (scope "server") are PreforkMixIn's class attributes:
  overridable per instance or as keyword arguments of the constructor, where
  apply() checks every value -- a bad one fails at construction with a
  ValueError that names it, never later as a client that hangs;
* command settings (scope "command") only mean something to the `prefork`
  command (cli.py): what to run, where to bind, logging, the pidfile...

The command's --help, its config file (-c), the PREFORK_CMD_ARGS environment
variable and the README's settings table (markdown_table()) all come from
SETTINGS.
"""

import logging
import os
import socket

from .listeners import default_backlog, parse_bind
from .mixins import ThreadingMixIn
from .scaling import SpareScaler

# The --help groups, in the order --help shows them.
SECTIONS = ["application", "workers", "timeouts and recycling", "process", "logging", "command"]

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


class Setting:
    """One setting.

    kind: int, float (ints accepted), bool, str, "umask" (an octal integer),
    "binds" (a list of bind specs, listeners.parse_bind()) or "tcp" (one
    HOST:PORT bind spec).  minimum
    bounds numbers (inclusive); choices lists the strings allowed; optional
    allows None, meaning "off".  inherit: the default comes from the server
    class (a ThreadingMixIn attribute), not from PreforkMixIn.  shown: the
    default as the docs say it, where it depends on the machine.  flags: the
    command's options (default: --name-with-dashes).  scope: "server" or
    "command" (see the module's docstring); section: its --help group.
    file: whether a config file may set it (not -c itself, nor the actions).
    """

    def __init__(self, name, default, kind, help, section, minimum=None, optional=False,
                 inherit=False, shown=None, flags=None, scope="server", choices=None,
                 file=True, metavar=None):
        self.name = name
        self.default = default
        self.shown = shown or ("none" if default is None else repr(default))
        self.kind = kind
        self.help = help
        self.section = section
        self.minimum = minimum
        self.optional = optional
        self.inherit = inherit
        self.flags = flags or ["--" + name.replace("_", "-")]
        self.scope = scope
        self.choices = choices
        self.file = file
        self.metavar = metavar

    def check(self, value):
        """Return value if it is valid for this setting; raise ValueError if not."""
        if value is None and self.optional:
            return value
        if self.kind == "binds":
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{self.name} must be a list of bind addresses, not {value!r}")
            for spec in value:
                parse_bind(spec)  # raises ValueError naming what is wrong
            return list(value)
        if self.kind == "tcp":
            return self._check_tcp(value)
        if not self._has_kind(value) or (self.minimum is not None and value < self.minimum):
            raise ValueError(f"{self.name} must be {self._describe()}, not {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, "
                             f"not {value!r}")
        if self.kind is str and not value:
            raise ValueError(f"{self.name} must not be empty")
        return value

    def _check_tcp(self, value):
        try:
            bind = parse_bind(value)
        except ValueError:
            bind = None
        if bind is None or bind.fd is not None or bind.family == socket.AF_UNIX \
                or not bind.stream:
            raise ValueError(f"{self.name} must be a TCP address HOST:PORT, not {value!r}")
        return value

    def parse(self, text):
        """The value that text (from the command line, the environment or a
        config file's string) stands for; ValueError naming the setting if none."""
        if self.optional and text.strip().lower() in ("none", "off"):
            return None
        try:
            if self.kind is int:
                return int(text)
            if self.kind is float:
                return float(text)
            if self.kind == "umask":
                return int(text, 8)
            if self.kind is bool:
                return {"true": True, "yes": True, "1": True, "on": True,
                        "false": False, "no": False, "0": False}[text.strip().lower()]
        except (ValueError, KeyError):
            raise ValueError(f"{self.name} must be {self._describe()}, not {text!r}") from None
        return text

    def _has_kind(self, value):
        if self.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value == value  # not NaN
        if self.kind is int or self.kind == "umask":
            return isinstance(value, int) and not isinstance(value, bool) \
                and (self.kind is int or 0 <= value <= 0o777)
        return isinstance(value, self.kind)

    def _describe(self):
        words = {int: "an integer", float: "a number", bool: "true or false",
                 str: "a string", "umask": "an octal mode from 000 to 777"}[self.kind]
        if self.minimum is not None:
            words += f" >= {self.minimum}"
        if self.optional:
            words += " or none"
        return words


def _server(*args, **kwargs):
    return Setting(*args, scope="server", **kwargs)


def _command(*args, **kwargs):
    return Setting(*args, scope="command", **kwargs)


SETTINGS = {s.name: s for s in [
    # -- application --
    _command("bind", ["127.0.0.1:8000"], "binds", "where to listen, repeatable: HOST:PORT, "
             ":PORT, [::1]:PORT, unix:PATH, udp://HOST:PORT, unix-dgram:PATH, fd://N",
             "application", flags=["-b", "--bind"], shown="127.0.0.1:8000", metavar="ADDRESS"),
    _command("worker_class", "sync", str, "sync: one request at a time per worker; "
             "threading: a thread per request; forking: a child per request",
             "application", flags=["-k", "--worker-class"],
             choices=["sync", "threading", "forking"]),
    _command("threads", 1, int, "request threads per worker (gunicorn's --threads): "
             "more than 1 makes the worker class threading, with max_threads = threads",
             "application", minimum=1),
    _server("preload_app", False, bool, "load the application in the master before forking; "
            "False: each worker (each new generation) imports it afresh",
            "application", flags=["--preload"]),
    _server("request_queue_size", default_backlog(), int, "listen backlog", "application",
            minimum=1, shown="2048, at most net.core.somaxconn", flags=["--backlog"]),
    _server("reuse_port", False, bool, "a SO_REUSEPORT listener per worker (TCP only)",
            "application"),
    _server("exclusive_accept", True, bool,
            "wake one worker per connection (Linux EPOLLEXCLUSIVE)", "application"),
    # -- workers --
    _server("workers", os.cpu_count() or 1, int, "worker processes", "workers", minimum=1,
            shown="CPU count", flags=["-w", "--workers"]),
    _server("max_workers", None, int, "the most workers TTIN may reach "
            "(none: 4 x workers, at least 16)", "workers", minimum=1, optional=True),
    _server("min_workers", None, int, "with spare scaling: the fewest workers (none: "
            "workers)", "workers", minimum=1, optional=True),
    _server("spare_min", None, int, "spare scaling (as Apache's MinSpareServers): fewer "
            "idle workers than this, and more are forked -- 1, 2, 4... a second, up to 32 "
            "(none: off)", "workers", minimum=1, optional=True),
    _server("spare_max", None, int, "spare scaling: more idle workers than this, and one is "
            "retired a second (down to min_workers)", "workers", minimum=1, optional=True),
    _server("max_threads", None, int, "requests a threading worker runs at once (none: "
            "unbounded); at the bound it stops accepting", "workers", minimum=1,
            optional=True, inherit=True),
    _server("reuse_threads", True, bool, "threading workers keep their request threads",
            "workers"),
    _server("inline_quick_requests", True, bool,
            "threading workers run quick requests in the loop's own thread", "workers"),
    _server("adaptive_threads", True, bool, "threading workers take no more requests while "
            "one keeps the GIL busy -- leaving them to workers with a core to spare -- and "
            "run CPU-bound requests one at a time", "workers"),
    _server("block_on_close", True, bool,
            "server_close() waits for the workers (and each worker for its requests)",
            "workers"),
    # -- timeouts and recycling --
    _server("graceful_timeout", 30.0, float, "seconds a stopping worker may take to finish; "
            "then it is SIGKILLed", "timeouts and recycling", minimum=0),
    _server("drain_delay", 0.0, float, "on a graceful stop, seconds to keep serving while "
            "health checks answer 503, before the listeners close (a balancer's reaction "
            "time)", "timeouts and recycling", minimum=0),
    _server("boot_timeout", 30.0, float, "seconds a worker may take to boot",
            "timeouts and recycling", minimum=0.01),
    _server("liveness_timeout", 30.0, float, "seconds a worker may go without a heartbeat "
            "(idle: its loop turns; busy: a watcher beats while the request runs)",
            "timeouts and recycling", minimum=0.01, flags=["-t", "--liveness-timeout"]),
    _server("request_timeout", None, float, "seconds one request may run; then its worker "
            "(or request child) is killed", "timeouts and recycling", minimum=0.01,
            optional=True),
    _server("max_requests", 0, int, "recycle a worker after this many requests (0: never)",
            "timeouts and recycling", minimum=0),
    _server("max_requests_jitter", 0, int, "... plus randint(0, jitter)",
            "timeouts and recycling", minimum=0),
    _server("max_worker_memory", None, int, "recycle a worker whose RSS passes this many "
            "bytes (checked after each request)", "timeouts and recycling", minimum=1,
            optional=True),
    _server("max_worker_age", None, float, "recycle a worker older than this many seconds",
            "timeouts and recycling", minimum=0.01, optional=True),
    _server("boot_attempts", 5, int, "failed boots in a row (with back-off) before giving up",
            "timeouts and recycling", minimum=1),
    # -- process --
    _server("proc_name", "prefork", str, "process title prefix", "process",
            flags=["-n", "--name"]),
    _server("user", None, str, "workers run as this user (name or uid), with its groups; "
            "the master keeps its own identity", "process", optional=True),
    _server("group", None, str, "workers run as this group (name or gid; default: the "
            "user's)", "process", optional=True),
    _command("umask", None, "umask", "file mode mask of the master, the workers and the Unix "
             "socket files (octal, e.g. 077)", "process", optional=True),
    _command("pidfile", None, str, "write the master's pid here once it is ready; removed "
             "at exit", "process", optional=True, flags=["-p", "--pid"], metavar="FILE"),
    _server("control_socket", None, str, "the master's control socket (prefork status, "
            "prefork ctl); the command's default: beside the pidfile (app.pid: app.ctl), "
            "else prefork-NAME.ctl in $XDG_RUNTIME_DIR, else none", "process", optional=True,
            flags=["--control"], metavar="PATH", shown="none (command: see meaning)"),
    _server("health_bind", None, "tcp", "answer load balancers' health checks here (HTTP): "
            "200 ready; 503 booting, or draining from the start of a graceful stop",
            "process", optional=True, metavar="HOST:PORT"),
    # -- logging --
    _command("log_level", "info", str, "the error log's level", "logging",
             choices=LOG_LEVELS),
    _command("error_logfile", "-", str, "the error log: a file, or - for stderr", "logging",
             flags=["--error-logfile", "--log-file"], metavar="FILE"),
    _command("access_logfile", None, str, "one line per request (client, worker, request, "
             "status, bytes, duration): a file, or - for stdout; none: off", "logging",
             optional=True, metavar="FILE"),
    # -- command --
    _command("config", None, str, "a Python file assigning settings (and hooks), as "
             "gunicorn's", "command", optional=True, flags=["-c", "--config"], file=False,
             metavar="FILE"),
    _command("check_config", False, bool, "load the application and the settings, print "
             "what would run, exit 0 (or 1 with the error)", "command", file=False),
    _command("print_config", False, bool, "print every setting's value and exit",
             "command", file=False),
    _command("debug", False, bool, "show the traceback of a startup error", "command"),
]}

# The hooks a config file may define, as gunicorn's: def post_fork(server, worker).
HOOKS = ["on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init",
         "worker_stopping", "worker_exit", "child_exit", "on_reload", "nworkers_changed",
         "on_exit"]


def default_control_socket(values, environ=os.environ):
    """Where the command's control socket is when --control is not given:
    beside the pidfile (app.pid -> app.ctl), else prefork-NAME.ctl in
    $XDG_RUNTIME_DIR; None (no control socket) without either."""
    if values["pidfile"]:
        base = values["pidfile"][:-len(".pid")] if values["pidfile"].endswith(".pid") \
            else values["pidfile"]
        return os.path.abspath(base + ".ctl")
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], f"prefork-{values['proc_name']}.ctl")
    return None


def server_settings():
    return [s for s in SETTINGS.values() if s.scope == "server"]


def markdown_table():
    """The settings as the README's table shows them (a test keeps the two equal)."""
    rows = ["| setting | option | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        where = "" if s.scope == "server" else " (command)"
        rows.append(f"| `{s.name}`{where} | `{', '.join(s.flags)}` | {s.shown} | {s.help} |")
    return "\n".join(rows)


def install_defaults(cls):
    """Give cls (PreforkMixIn) a class attribute per server setting, from the table."""
    for setting in server_settings():
        if not setting.inherit:
            setattr(cls, setting.name, setting.default)


def apply(server, kwargs):
    """Take the server settings out of a constructor's kwargs onto server,
    then check every one's value (keyword, instance or class attribute)."""
    for setting in server_settings():
        if setting.name in kwargs:
            setattr(server, setting.name, kwargs.pop(setting.name))
    for setting in server_settings():
        setting.check(getattr(server, setting.name, None))
    if getattr(server, "max_threads", None) is not None and not isinstance(server, ThreadingMixIn):
        raise ValueError("max_threads needs a server with prefork's ThreadingMixIn")
    server.max_workers = check_workers(server.workers, server.max_workers)
    server.scaler = spare_scaler(server.workers, server.min_workers, server.max_workers,
                                 server.spare_min, server.spare_max)


def spare_scaler(workers, min_workers, max_workers, spare_min, spare_max):
    """The SpareScaler for these settings (None if spare_min/spare_max are
    off); ValueError if they do not fit together."""
    if spare_min is None and spare_max is None:
        if min_workers is not None:
            raise ValueError("min_workers needs spare scaling: spare_min and spare_max")
        return None
    if spare_min is None or spare_max is None:
        raise ValueError("spare_min and spare_max go together")
    min_workers = min_workers or workers
    if not min_workers <= workers:
        raise ValueError(f"min_workers ({min_workers}) must not exceed workers ({workers})")
    return SpareScaler(min_workers, max_workers, spare_min, spare_max)


def check_workers(workers, max_workers):
    """max_workers, or its default for workers (None: 4 x workers, at least 16);
    ValueError if workers exceed it."""
    if max_workers is None:
        max_workers = max(16, 4 * workers)
    if workers > max_workers:
        raise ValueError(f"workers ({workers}) must not exceed max_workers ({max_workers})")
    return max_workers


def log_level(name):
    """The logging level for a log_level setting's value."""
    return getattr(logging, name.upper())
