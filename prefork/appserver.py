"""The server the prefork command builds for an application.

build_server() picks the classes -- CommandServer (PreforkMixIn as the command
runs it), the worker class's mix-in, and a server class fit for the
application: its own (a server class), wsgiref's (a WSGI application),
http.server's HTTPServer (an HTTP handler), or a TCPServer/UDPServer -- and
makes the server on listening sockets opened already.  HTTPLogging routes an
http.server handler's log lines to prefork's access and error logs.
"""

import functools
import io
import logging
import os
import socket
from time import monotonic

import prefork

from . import apps, cli, config, logfiles
from .config import server_settings
from .listeners import format_address
from .mixins import ForkingMixIn, ThreadingMixIn
from .preforkmixin import PreforkMixIn
from .server import TCPServer, UDPServer

log = logging.getLogger("prefork")

# A Unix stream socket's client has no address: it is told as nginx tells it
# (http.server and wsgiref need a (host, port) tuple, not the stdlib's '').
UNIX_CLIENT = ("unix:", 0)

WORKER_MIXINS = {"sync": (), "threading": (ThreadingMixIn,), "forking": (ForkingMixIn,)}

class CommandServer(PreforkMixIn):
    """PreforkMixIn as the command runs it: the application's code, the
    config file's hooks, the access log, the pidfile and reloads.

    command: the Command; hooks: the config file's, as gunicorn calls them
    (hook(server, ...)).
    """

    command = None
    hooks = {}

    def load_app(self, worker):
        """In each worker (after dropping to user/group): the application afresh."""
        app = self.command.app
        if app.kind == apps.SERVER:
            return  # the master built this server: its code is the master's
        app = apps.reload(app)
        if app.kind == apps.WSGI:
            self.set_app(app.obj)
        else:
            self.RequestHandlerClass = handler_for(app.obj)

    def reload_config(self):
        self.command.reload()

    def when_ready(self):
        if self.command.pidfile:
            self.command.pidfile.write(os.getpid())
        self._hook("when_ready")

    def open_health_listener(self):
        return self.command.health_socket  # (opened at the start, for one-line errors)

    def upgrade_files(self):
        pidfile = self.command.pidfile
        return super().upgrade_files() + [pidfile.path if pidfile else None]

    def finish_request(self, request, client_address):
        """Time the request for the access log (an HTTP handler logs each of its
        requests itself)."""
        if logfiles.access_log.disabled or _speaks_http(self.RequestHandlerClass):
            return super().finish_request(request, client_address)
        started = monotonic()
        try:
            super().finish_request(request, client_address)
        finally:
            logfiles.log_access(_client(client_address), _worker_number(self), "-", "-", "-",
                                monotonic() - started)

    def get_request(self):
        request, client_address = super().get_request()
        if type(client_address) is str and self.socket_type == socket.SOCK_STREAM:
            client_address = UNIX_CLIENT
        return request, client_address

    def _hook(self, name, *args):
        hook = self.hooks.get(name)
        if hook is not None:
            hook(self, *args)


def _make_hook(name):
    def hook(self, *args):
        self._hook(name, *args)
    hook.__name__ = name
    hook.__doc__ = f"The config file's {name}(server, ...), if it defines one."
    return hook


for _name in config.HOOKS:
    if _name not in vars(CommandServer):  # (when_ready: written out above)
        setattr(CommandServer, _name, _make_hook(_name))


def build_server(command, sockets):
    """The server for command's application, serving on sockets."""
    cfg, app = command.config, command.app
    cls = _server_class(app, cfg.worker_class, sockets[0].type == socket.SOCK_STREAM)
    settings = {s.name: cfg.values[s.name] for s in server_settings()}
    if cfg.worker_class != "threading":
        del settings["max_threads"]
    arguments = () if app.kind in (apps.SERVER, apps.WSGI) else (handler_for(app.obj),)
    try:
        server = cls(sockets[0].getsockname(), *arguments, bind_and_activate=False, **settings)
    except TypeError as error:
        raise cli.UsageError(f"{app.describe()} cannot be made as socketserver's are "
                             f"(server_address, bind_and_activate=False): {error}") from None
    server.command = command
    server.hooks = cfg.hooks
    server.use_listeners(sockets)
    if app.kind == apps.WSGI:
        server.set_app(app.obj)
    return server


def _server_class(app, worker_class, stream):
    mixins = WORKER_MIXINS[worker_class]
    if app.kind == apps.SERVER:
        base = app.obj
        mixins = tuple(m for m in mixins if not issubclass(base, m))
    elif app.kind == apps.WSGI:
        base = wsgi_server_class()
    elif _speaks_http(app.obj):
        import http.server
        base = http.server.HTTPServer
    else:
        base = TCPServer if stream else UDPServer
    kinds = "".join(mixin.__name__.replace("MixIn", "") for mixin in mixins)
    name = f"Prefork{kinds}{base.__name__.removeprefix('Prefork')}"
    return type(name, (CommandServer, *mixins, base), {})


def wsgi_server_class():
    """wsgiref's WSGIServer (on prefork: see use_prefork_as_socketserver), its
    handler naming prefork as the SERVER_SOFTWARE."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class PreforkWSGIRequestHandler(HTTPLogging, WSGIRequestHandler):
        server_version = f"prefork/{prefork.__version__}"
        # wsgiref writes the status line, each header and the body apart, and
        # flushes after each chunk of the body: buffered, the head leaves with
        # the first chunk -- one send instead of five (a third less CPU per request).
        wbufsize = io.DEFAULT_BUFFER_SIZE

    class PreforkWSGIServer(WSGIServer):
        def __init__(self, server_address, RequestHandlerClass=PreforkWSGIRequestHandler,
                     bind_and_activate=True, **kwargs):
            super().__init__(server_address, RequestHandlerClass, bind_and_activate, **kwargs)

    return PreforkWSGIServer


# -- handlers: the access log and the error log ----------------------------------------

class HTTPLogging:
    """For an http.server handler run by the command: each request is a line of
    the access log (if on), each error a line of the error log -- not
    http.server's lines on stderr."""

    def parse_request(self):
        self._prefork_started = monotonic()
        return super().parse_request()

    def log_request(self, code="-", size="-"):
        if logfiles.access_log.disabled:
            return
        started = getattr(self, "_prefork_started", None)
        logfiles.log_access(_client(self.client_address), _worker_number(self.server),
                            getattr(self, "requestline", "-") or "-",
                            getattr(code, "value", code), size,
                            monotonic() - started if started else 0.0)

    def log_error(self, format, *args):
        log.warning("%s: %s", _client(self.client_address), format % args)

    def log_message(self, format, *args):
        log.info("%s: %s", _client(self.client_address), format % args)


def handler_for(handler):
    """handler, logging through prefork's logs if it speaks HTTP."""
    if _speaks_http(handler) and not issubclass(handler, HTTPLogging):
        return type(handler.__name__, (HTTPLogging, handler), {"__module__": handler.__module__,
                                                              "__qualname__": handler.__qualname__})
    return handler


@functools.lru_cache(maxsize=None)  # (asked per request, with the access log on)
def _speaks_http(handler):
    return isinstance(handler, type) and any(
        base.__name__ == "BaseHTTPRequestHandler" and base.__module__ == "http.server"
        for base in handler.__mro__)


def _client(address):
    if address == UNIX_CLIENT:
        return "unix:"
    return format_address(address) if address else "-"


def _worker_number(server):
    worker = server.current_worker
    return worker.number if worker else "-"

