"""The prefork settings: one table of name, default, check and help.

PreforkMixIn takes its class attributes from SETTINGS and accepts each one as
a keyword argument of its constructor; apply() checks every value there, so a
bad setting fails at construction with a ValueError that names it -- never
later as a client that hangs.  The README's settings table is this table.
"""

import os

from .listeners import default_backlog
from .mixins import ThreadingMixIn


class Setting:
    """One setting: its name, default, the check of a value, and one line of help.

    kind is int, float (ints accepted), bool or str; minimum bounds numbers
    (inclusive); optional allows None, meaning "off".  inherit: the default
    comes from the server class (a ThreadingMixIn attribute), not from
    PreforkMixIn.  shown: the default as the docs say it, where it depends on
    the machine.
    """

    def __init__(self, name, default, kind, help, minimum=None, optional=False, inherit=False,
                 shown=None):
        self.name = name
        self.default = default
        self.shown = shown or repr(default)  # the default as the docs say it
        self.kind = kind
        self.help = help
        self.minimum = minimum
        self.optional = optional
        self.inherit = inherit

    def check(self, value):
        """Return value if it is valid for this setting; raise ValueError if not."""
        if value is None and self.optional:
            return value
        if not self._has_kind(value):
            raise ValueError(f"{self.name} must be {self._describe()}, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be {self._describe()}, not {value!r}")
        if self.kind is str and not value:
            raise ValueError(f"{self.name} must not be empty")
        return value

    def _has_kind(self, value):
        if self.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value == value  # not NaN
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, self.kind)

    def _describe(self):
        words = {int: "an integer", float: "a number", bool: "True or False",
                 str: "a string"}[self.kind]
        if self.minimum is not None:
            words += f" >= {self.minimum}"
        if self.optional:
            words += " or None"
        return words


SETTINGS = {s.name: s for s in [
    Setting("workers", os.cpu_count() or 1, int, "worker processes", minimum=1,
            shown="CPU count"),
    Setting("max_workers", None, int, "the most workers TTIN may reach "
            "(None: 4 x workers, at least 16)", minimum=1, optional=True),
    Setting("graceful_timeout", 30.0, float,
            "seconds a stopping worker may take to finish; then it is SIGKILLed", minimum=0),
    Setting("boot_timeout", 30.0, float, "seconds a worker may take to boot", minimum=0.01),
    Setting("liveness_timeout", 30.0, float, "seconds a worker may go without a heartbeat "
            "(idle: its loop turns; busy: a watcher beats while the request runs)",
            minimum=0.01),
    Setting("request_timeout", None, float, "seconds one request may run; then its worker "
            "(or request child) is killed", minimum=0.01, optional=True),
    Setting("max_requests", 0, int, "recycle a worker after this many requests (0: never)",
            minimum=0),
    Setting("max_requests_jitter", 0, int, "... plus randint(0, jitter)", minimum=0),
    Setting("max_worker_memory", None, int, "recycle a worker whose RSS passes this many bytes "
            "(checked after each request)", minimum=1, optional=True),
    Setting("max_worker_age", None, float, "recycle a worker older than this many seconds",
            minimum=0.01, optional=True),
    Setting("boot_attempts", 5, int, "failed boots in a row (with back-off) before giving up",
            minimum=1),
    Setting("preload_app", False, bool,
            "False: each new generation re-imports the handler's module"),
    Setting("exclusive_accept", True, bool,
            "wake one worker per connection (Linux EPOLLEXCLUSIVE)"),
    Setting("reuse_port", False, bool, "a SO_REUSEPORT listener per worker (TCP only)"),
    Setting("proc_name", "prefork", str, "process title prefix"),
    Setting("request_queue_size", default_backlog(), int, "listen backlog", minimum=1,
            shown="2048, at most net.core.somaxconn"),
    Setting("block_on_close", True, bool,
            "server_close() waits for the workers (and each worker for its requests)"),
    Setting("reuse_threads", True, bool, "threading workers keep their request threads"),
    Setting("inline_quick_requests", True, bool,
            "threading workers run quick requests in the loop's own thread"),
    Setting("max_threads", None, int, "requests a threading worker runs at once (None: "
            "unbounded); at the bound it stops accepting", minimum=1, optional=True,
            inherit=True),
]}


def markdown_table():
    """The settings as the README's table shows them (a test keeps the two equal)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.shown} | {s.help} |" for s in SETTINGS.values()]
    return "\n".join(rows)


def install_defaults(cls):
    """Give cls (PreforkMixIn) a class attribute per setting, from the table."""
    for setting in SETTINGS.values():
        if not setting.inherit:
            setattr(cls, setting.name, setting.default)


def apply(server, kwargs):
    """Take the settings out of a constructor's kwargs onto server, then
    check every setting's value (keyword, instance or class attribute)."""
    for name in SETTINGS.keys() & kwargs.keys():
        setattr(server, name, kwargs.pop(name))
    for setting in SETTINGS.values():
        setting.check(getattr(server, setting.name, None))
    if getattr(server, "max_threads", None) is not None and not isinstance(server, ThreadingMixIn):
        raise ValueError("max_threads needs a server with prefork's ThreadingMixIn")
    if server.max_workers is None:
        server.max_workers = max(16, 4 * server.workers)
    if server.workers > server.max_workers:
        raise ValueError(f"workers ({server.workers}) must not exceed "
                         f"max_workers ({server.max_workers})")
