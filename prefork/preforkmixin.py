"""PreforkMixIn: any socketserver server, run as a master and pre-forked workers.

    class Server(PreforkMixIn, ThreadingMixIn, TCPServer):
        workers = 4

    with Server(("127.0.0.1", 8000), Handler) as server:
        server.serve_forever()    # the master supervises; each worker serves

The constructor binds and listens as socketserver's does.  PreforkMixIn is a
thin adapter: it holds the settings and the hooks, and hands each of its
overrides to the role of the process it runs in -- a Master (master.py),
replaced by a Worker (worker.py) in each forked worker.
"""

import logging
import socket
import sys

from . import config, health, privileges
from .listeners import (
    AdoptedSocket, format_address, open_listener, parse_bind, remove_stale_unix_socket)
from .loop import ServeLoop
from .master import Master

log = logging.getLogger("prefork")

# A client that went away mid-request: one line, not a traceback.
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class PreforkMixIn:
    """Mix-in that runs a server as a master and pre-forked workers.

    Put it first: class S(PreforkMixIn, ThreadingMixIn, TCPServer).  Works
    over prefork's servers and over the standard library's (for example
    http.server.ThreadingHTTPServer).  Each setting of config.SETTINGS is a
    class attribute, overridable per instance or as a keyword argument of the
    constructor; a bad value raises ValueError there.

    Hooks to override (gunicorn's names): on_starting, when_ready, pre_fork,
    post_fork, post_worker_init, worker_stopping, worker_exit, child_exit,
    on_reload, nworkers_changed, on_exit.  An exception in a master's hook
    stops the pool (quickly) and propagates from serve_forever(); one in a
    worker's hook ends that worker (at boot: a failed boot).  Two more say
    where the application's code comes from: load_app (in each worker) and
    reload_config (in the master, on HUP); open_health_listener, where the
    health listener comes from.

    Several listeners: add_listener() adds a socket the workers accept on
    beside server.socket (all of one socket type, for the one handler).

    In a worker, handlers may read server.current_worker and wait on
    server.stopping (see connections.py for connections kept open).
    """

    # In a new master started by a binary upgrade (USR2): the old master's pid
    # (the prefork command sets it; the master says when it serves beside it).
    upgraded_from = None

    def __init__(self, *args, **kwargs):
        config.apply(self, kwargs)
        self._identity = privileges.identity(self.user, self.group)  # (ValueError if unknown)
        if self.reuse_port:
            if self.socket_type != socket.SOCK_STREAM or self.address_family == socket.AF_UNIX:
                raise ValueError("reuse_port needs a TCP server")
            self.allow_reuse_port = True
        if (self.socket_type == socket.SOCK_STREAM and self.address_family != socket.AF_UNIX
                and _default_of_the_framework(type(self), "allow_reuse_address")):
            # As gunicorn: a restarted master can bind the port at once, despite
            # the TIME_WAIT connections its workers closed -- unless the application
            # chose otherwise (TCP only: over UDP, SO_REUSEADDR shares the port).
            self.allow_reuse_address = True
        self._unix_paths = []  # socket files this server bound, removed on close
        self._removed_stale_socket = None
        self._role = Master(self, super())
        self.listeners = []  # (server_close() may run within the constructor)
        super().__init__(*args, **kwargs)
        self.listeners = [self.socket]
        if not hasattr(self, "_serve_loop"):  # a server class of the standard library
            self._serve_loop = ServeLoop()

    @property
    def current_worker(self):
        """In a worker (and its request children), its WorkerInfo; None in the master."""
        return self._role.info

    @property
    def stopping(self):
        """An event set when this process begins to stop (connections.StopEvent)."""
        return self._role.stopping

    @property
    def exit_status(self):
        """In the master, after server_close(): how the stop went (master.ExitStatus)."""
        return self._role.exit_status

    # -- the listener ---------------------------------------------------------

    def server_bind(self):
        """Bind -- first removing a Unix socket file that nothing listens on.
        (A socket bound already, listeners.AdoptedSocket, is only taken on.)"""
        adopted = isinstance(self.socket, AdoptedSocket)
        unix_path = (self.address_family == socket.AF_UNIX
                     and isinstance(self.server_address, str))
        if unix_path and not adopted:
            if remove_stale_unix_socket(self.server_address, self.socket_type):
                self._removed_stale_socket = self.server_address  # the master logs it
        super().server_bind()
        if unix_path and getattr(self.socket, "bound_here", True):
            self._unix_paths.append(self.server_address)

    def add_listener(self, sock):
        """Accept on sock too (a listeners.open_listener() socket of the same
        socket type), in the workers forked from now on."""
        if sock.type != self.socket_type:
            raise ValueError("every listener of one server must be of the same socket "
                             "type (stream or datagram): the handler reads one kind")
        if self.reuse_port:
            raise ValueError("reuse_port works with one listener")
        self.listeners.append(sock)
        self._remember_unix_path(sock)

    def _remember_unix_path(self, sock):
        """A Unix socket file this process bound is removed when it closes."""
        address = sock.getsockname()
        if isinstance(address, str) and address and getattr(sock, "bound_here", False):
            self._unix_paths.append(address)

    def use_listeners(self, sockets):
        """Serve on sockets, bound already (listeners.open_listener(): by the
        prefork command, systemd or another master), instead of binding: for
        a server made with bind_and_activate=False.  The first becomes
        server.socket, taken on by the class's own server_bind() (whose bind()
        is a no-op) and server_activate(); the others are add_listener()'s."""
        self.socket.close()
        self.socket = sockets[0]
        self.address_family = self.socket.family
        self.server_address = self.socket.getsockname()
        self.server_bind()
        self.server_activate()
        self.listeners = [self.socket]
        for sock in sockets[1:]:
            self.add_listener(sock)

    def replace_listeners(self, sockets):
        """In the master (reload_config()): the workers forked from now on
        accept on sockets.  Listeners left out are closed once the new
        generation serves -- or, if it cannot boot, the new ones are."""
        self._role.replace_listeners(sockets)

    def _listening_sockets(self):
        return self.listeners

    def server_activate(self):
        """Listen -- except with reuse_port, where each worker listens on its own."""
        if not self.reuse_port:
            super().server_activate()

    # -- handed to the role of this process ---------------------------------------

    def serve_forever(self, poll_interval=0.5):
        """In the master: supervise the workers until shutdown() or a stop signal.

        Raises WorkerBootError if workers keep failing to boot.
        """
        self._role.serve_forever(poll_interval)

    def shutdown(self):
        """Stop gracefully, as TERM does.  In the master, from another thread,
        wait for its loop; in a worker (a handler), stop that worker."""
        self._role.shutdown()

    def service_actions(self):
        self._role.service_actions()

    def _accepting_requests(self):
        return self._role.accepting_requests()

    def _next_turn_in(self):
        return self._role.next_turn_in()

    def process_request(self, request, client_address):
        self._role.process_request(request, client_address)

    def finish_request(self, request, client_address):
        self._role.finish_request(request, client_address)

    def server_close(self):
        """Close the listener; in the master, wait for the workers (block_on_close)
        and remove the Unix socket file it bound."""
        self._role.server_close()

    def handle_error(self, request, client_address):
        """A client that reset or broke its connection is one line of the
        prefork log (at debug level); any other error goes to the next
        class's handle_error().  Override to taste."""
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            log.debug("Client %s went away: %s", _format_client(client_address), error)
        else:
            super().handle_error(request, client_address)

    # -- hooks: override to taste (gunicorn's names) --------------------------

    def on_starting(self):
        """In the master, before the first workers are forked."""

    def when_ready(self):
        """In the master, once listening with the first workers forked."""

    def pre_fork(self, worker):
        """In the master, just before a worker is forked."""

    def post_fork(self, worker):
        """In the worker, just after the fork."""

    def post_worker_init(self, worker):
        """In the worker, when it is about to serve."""

    def worker_stopping(self, worker):
        """In the worker, when its graceful stop begins (after its open
        connections were told).  It may run in a signal handler: keep it short."""

    def worker_exit(self, worker):
        """In the worker, just before it exits."""

    def child_exit(self, worker):
        """In the master, once an exited worker has been reaped."""

    def on_reload(self):
        """In the master, on HUP, before the new generation is forked."""

    def nworkers_changed(self, new_value, old_value):
        """In the master, when TTIN/TTOU change the number of workers."""

    def on_exit(self):
        """In the master, once every worker has stopped (server_close() with
        block_on_close; without it, workers may still be finishing: not called)."""

    # -- where the code comes from: override to taste ------------------------------

    def load_app(self, worker):
        """In a worker, after the fork and the drop to user/group, unless
        preload_app: load the application's code afresh.  The default
        re-imports the handler's module from the second generation on (a
        reload runs the new code); the prefork command loads its app here."""
        if worker.generation > 1:
            self._role.reload_handler()

    def upgrade_files(self):
        """The files a binary upgrade (USR2) moves aside to PATH.oldbin while
        the new master starts: the control socket (the command adds its
        pidfile)."""
        return [self.control_socket]

    def open_health_listener(self):
        """In the master, at start, with health_bind set: the health
        listener's socket, bound and listening (health.py).  The command's
        takes the one an old master handed over (USR2)."""
        return open_listener(parse_bind(self.health_bind), health.BACKLOG)

    def reload_config(self):
        """In the master, on HUP, before anything else: read the settings
        again and apply them.  Raise ValueError (with what is wrong) to keep
        the running configuration: the reload does not happen.  The default
        has nothing to read."""


config.install_defaults(PreforkMixIn)


def _default_of_the_framework(cls, name):
    """Whether cls gets attribute `name` from socketserver itself (prefork's or the
    stdlib's), rather than from a class of the application."""
    owner = next(c for c in cls.__mro__ if name in vars(c))
    return owner.__module__ in ("prefork.server", "socketserver")


def _format_client(address):
    return format_address(address) if address else "(unix)"
