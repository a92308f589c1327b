"""One run of the prefork command, around the server it runs (appserver.py):
logging, the pidfile, umask, the listeners, and the reload of the
configuration on HUP.

Command(argv).run() reads the configuration (cli.read_config), loads the
application (apps.load), opens the listeners, builds the server -- PreforkMixIn,
the worker class's mix-in and a server class fit for the application -- and
serves until a stop.  The application's code is imported once in the master
(to know what it is); unless preloaded, each worker imports it afresh after
dropping to user/group (CommandServer.load_app).

So that http.server, xmlrpc.server and wsgiref run on prefork's framework,
the command makes prefork the `socketserver` module of the process before it
imports the application (prefork is a drop-in for it).
"""

import logging
import os
import socket
import sys

import prefork

from . import apps, cli, config, logfiles, privileges, systemd, upgrade
from .appserver import build_server
from .config import log_level, server_settings
from .listeners import (
    close_listener, matches, open_listener, parse_bind, remove_stale_unix_socket)
from .master import WorkerBootError
from .pidfile import Pidfile, PidfileError, pid_alive

log = logging.getLogger("prefork")

# What a user may get wrong: told in one line (cli.report()).
STARTUP_ERRORS = (cli.UsageError, apps.AppNotFound, PidfileError, ValueError, OSError)


class ApplicationError(Exception):
    """The application's own code raised while it was imported (the cause)."""

# Settings a HUP cannot change in a running master: they shape its server
# object or its scoreboard.  A change is logged, and waits for a restart.
RESTART_ONLY = ("worker_class", "threads", "max_workers", "reuse_port", "exclusive_accept",
                "request_queue_size", "control_socket", "health_bind")


class Command:
    """One run of the prefork command, from its arguments to its exit status."""

    def __init__(self, argv):
        self.argv = argv
        self.config = None
        self.app = None
        self.server = None
        self.pidfile = None
        self.inherited = []       # listening sockets handed over (USR2), not yet used
        self.handed_over = []     # the Unix socket files among those used
        self.upgrading_from = None  # the old master's pid, in a new master (USR2)
        self.activated = None     # under systemd's socket activation: its fd:// binds
        self.health_socket = None  # health_bind's listening socket, for the server

    def run(self):
        self.config = self.read_config()
        self.configure_logging(self.config)
        use_prefork_as_socketserver()
        try:
            self.app = apps.load(self.config.app)
        except apps.AppNotFound:
            raise
        except Exception as error:
            raise ApplicationError() from error
        if self.config.print_config:
            cli.print_config(self.config)
            return 0
        if self.config.check_config:
            self.check_server_fits()
            print(f"prefork: configuration OK\n{cli.describe(self.config, self.app)}")
            return 0
        return self.serve()

    def read_config(self):
        """cli.read_config() for this run; under systemd's socket activation,
        the binds are systemd's sockets (fd://N), whatever the settings say."""
        cfg = cli.read_config(self.argv)
        if self.activated is None:
            fds = [fd for fd, _ in systemd.listen_fds()] or upgrade.activated_fds()
            self.activated = [f"fd://{fd}" for fd in fds]
            if fds:  # (for a binary upgrade's new master: see upgrade.py)
                os.environ[upgrade.ACTIVATED_VARIABLE] = "1"
        if self.activated:
            cfg.values["bind"] = self.activated
        return cfg

    def serve(self):
        if self.activated:
            log.info("Socket activation: serving on systemd's sockets (%s)",
                     ", ".join(self.activated))
        if self.config.umask is not None:
            os.umask(self.config.umask)
        self.check_server_fits()
        self.pidfile = Pidfile(self.config.pidfile) if self.config.pidfile else None
        stale = self.pidfile.check() if self.pidfile else None
        if self.config.control_socket:
            self.check_control_socket(self.config.control_socket)
        self.inherited, self.upgrading_from = upgrade.inherited_listeners(
            self.config.request_queue_size)
        sockets = self.open_listeners(self.config.bind)
        try:
            self.health_socket = self.open_health_listener()
        except BaseException:
            for sock in sockets:
                close_listener(sock)
            raise
        for sock in self.inherited:  # handed over, but no longer bound to
            close_listener(sock)
        try:
            self.server = build_server(self, sockets)
        except BaseException:
            for sock in sockets + [self.health_socket]:
                if sock:
                    close_listener(sock)
            raise
        if stale:
            log.info("Replacing the stale pidfile %s (pid %d is gone)", self.pidfile.path, stale)
        self.server.upgraded_from = self.upgrading_from
        try:
            self.server.serve_forever()
        except WorkerBootError:
            pass  # logged by the master; exit_status says so
        finally:
            self.server.server_close()
            if self.pidfile:
                self.pidfile.remove(os.getpid())
            self.remove_handed_over_files()
        return int(self.server.exit_status)

    def remove_handed_over_files(self):
        """The Unix socket files an old master handed over are this master's
        to remove -- once the old one has gone (if it still serves, this
        upgrade failed: they are its)."""
        if self.upgrading_from and not pid_alive(self.upgrading_from):
            for path in self.handed_over:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    # -- listeners ------------------------------------------------------------

    def open_listeners(self, specs):
        """A listening socket for each spec: the server's own where it has one
        for the same address (on a reload), else a new one.  If one cannot be
        opened, those opened are closed again."""
        serving = {sock.opened_for: sock for sock in self.server.listeners} if self.server else {}
        wanted, opened = {}, []
        try:
            for spec in specs:
                bind = parse_bind(spec)
                if bind in wanted:
                    raise cli.UsageError(f"bind {spec!r} is given twice")
                if bind not in serving:
                    opened.append(self._take_inherited(bind) or self._open(bind))
                wanted[bind] = serving.get(bind) or opened[-1]
        except BaseException:
            for sock in opened:
                sock.close()
            raise
        return list(wanted.values())

    def _take_inherited(self, bind):
        """The socket an old master handed over for bind, if any (USR2)."""
        for sock in self.inherited:
            if matches(bind, sock):
                self.inherited.remove(sock)
                sock.opened_for = bind
                if sock.family == socket.AF_UNIX:
                    self.handed_over.append(sock.getsockname())
                return sock
        return None

    def open_health_listener(self):
        """health_bind's socket (the one an old master handed over, after
        USR2), or None without health_bind."""
        if not self.config.health_bind:
            return None
        bind = parse_bind(self.config.health_bind)
        try:
            return self._take_inherited(bind) or self._open(bind)
        except cli.UsageError as error:
            raise cli.UsageError(f"health_bind: {error}") from None

    def _open(self, bind):
        try:
            return open_listener(bind, self.config.request_queue_size)
        except OSError as error:
            raise cli.UsageError(f"cannot listen on {bind}: {error.strerror or error}") from None

    def check_server_fits(self):
        """The binds and the application agree: ValueError saying why not."""
        binds = [parse_bind(spec) for spec in self.config.bind]
        inherited = [bind for bind in binds if bind.fd is not None]
        kinds = {bind.stream for bind in binds if bind.fd is None}
        if len(kinds) > 1:
            raise cli.UsageError("the binds mix stream and datagram sockets "
                                 f"({', '.join(self.config.bind)}): one server reads one kind; "
                                 "run one prefork command for each")
        stream = kinds.pop() if kinds else not inherited or _inherited_is_stream(inherited[0])
        if self.config.reuse_port and len(binds) > 1:
            raise cli.UsageError("reuse_port works with one bind")
        needs = _socket_kind_of(self.app)
        if needs is not None and needs != stream:
            raise cli.UsageError(
                f"{self.app.describe()} serves {'stream' if needs else 'datagram'} sockets: "
                f"it cannot serve {', '.join(self.config.bind)}")

    def check_control_socket(self, path):
        """Refuse a control socket another master answers on -- or, if it was
        only the default path, run without one (two masters started alike)."""
        try:
            remove_stale_unix_socket(path, socket.SOCK_STREAM)
        except OSError:
            if "control_socket" in self.config.given:
                raise cli.UsageError(f"control socket {path}: another prefork master answers "
                                     "there; give this one --control PATH") from None
            log.warning("Control socket %s: another prefork master answers there; this one "
                        "has none (give it --control PATH)", path)
            self.config.values["control_socket"] = None

    # -- logging --------------------------------------------------------------

    def configure_logging(self, cfg):
        try:
            logfiles.configure(log_level(cfg.log_level), cfg.error_logfile,
                               cfg.access_logfile)
        except OSError as error:
            which = "error_logfile" if error.filename == cfg.error_logfile else "access_logfile"
            raise cli.UsageError(f"{which} {error.filename}: {error.strerror}") from None

    # -- HUP: the configuration read again ------------------------------------------

    def reload(self):
        """Read the configuration again (file, environment, the original
        command line) and apply it; ValueError, with nothing applied, if it
        is wrong (the master keeps the running configuration)."""
        try:
            new = self.read_config()
            if new.app != self.config.app:
                raise cli.UsageError("the application cannot change on a reload")
            identity = privileges.identity(new.user, new.group)
            sockets = self.open_listeners(new.bind) if new.bind != self.config.bind else None
        except (cli.UsageError, ValueError, OSError) as error:
            raise ValueError(str(error)) from None
        old, self.config = self.config, new
        if "control_socket" not in new.given:  # its default: as it was at the start
            new.values["control_socket"] = old.values["control_socket"]
        for name in RESTART_ONLY:
            if new.values[name] != old.values[name]:
                log.warning("%s changed (%r -> %r): it applies at the next start, not on "
                            "a reload", name, old.values[name], new.values[name])
                new.values[name] = old.values[name]
        changed = [f"{name} {old.values[name]!r} -> {value!r}"
                   for name, value in new.values.items() if value != old.values[name]]
        log.info("Configuration read again: %s", "; ".join(changed) or "nothing changed")
        server = self.server
        for setting in server_settings():
            if setting.name not in RESTART_ONLY:
                setattr(server, setting.name, new.values[setting.name])
        server._identity = identity
        server.scaler = config.spare_scaler(server.workers, server.min_workers,
                                            server.max_workers, server.spare_min,
                                            server.spare_max)
        server.hooks = new.hooks
        if new.umask is not None:
            os.umask(new.umask)
        if sockets is not None:
            server.replace_listeners(sockets)
        self.configure_logging(new)
        self.move_pidfile(old.pidfile, new.pidfile)
        if self.app.kind == apps.SERVER:
            log.warning("%s: the master built the server from it, so the new workers run "
                        "the code it loaded; restart to load new code", self.app.describe())

    def move_pidfile(self, old, new):
        if old == new:
            return
        pid = os.getpid()
        if old:
            self.pidfile.remove(pid)
        self.pidfile = Pidfile(new) if new else None
        if self.pidfile:
            self.pidfile.write(pid)


def use_prefork_as_socketserver():
    """Make `import socketserver` give prefork in this process, before the
    application is imported (prefork never imports the stdlib's module)."""
    sys.modules.setdefault("socketserver", prefork)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # MODULE is looked for where the command runs, too


def _socket_kind_of(app):
    """True if app needs stream sockets, False datagram ones, None if either."""
    if app.kind == apps.WSGI:
        return True
    if app.kind == apps.SERVER:
        return app.obj.socket_type == socket.SOCK_STREAM
    names = {base.__name__ for base in app.obj.__mro__}
    if "StreamRequestHandler" in names:
        return True
    if "DatagramRequestHandler" in names:
        return False
    return None


def _inherited_is_stream(bind):
    try:
        with socket.socket(fileno=os.dup(bind.fd)) as sock:
            return sock.type == socket.SOCK_STREAM
    except OSError:
        raise cli.UsageError(f"bind {bind.spec!r}: descriptor {bind.fd} is not an open "
                             "socket") from None
