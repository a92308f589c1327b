"""The connections a worker's handlers hold open, so that a stop reaches them.

A handler owns its connection: a keep-alive HTTP handler, or any protocol
that keeps its connection open, sits in handle() between requests and never
sees a stop.  So each worker keeps a registry of its live handlers, and when
its graceful stop begins (TERM, a reload, recycling) it calls every handler's
``stop_connection()``:

* BaseHTTPRequestHandler subclasses get one from HTTPStop below: a
  connection waiting for its next request line is closed at once (the client
  sees a clean EOF, as after a keep-alive timeout); a request in progress
  completes, its answer carries ``Connection: close``, then the connection
  closes.  A client that has sent part of a request is in progress, not idle.
* Any other handler may define ``stop_connection(self)`` to end its
  connection promptly -- for example ``self.connection.shutdown(SHUT_RD)``,
  so that a blocked read returns EOF -- or wait on ``self.server.stopping``
  (see StopEvent).  A handler that does neither holds the stop until it
  returns, or until graceful_timeout.

stop_connection() may run in a signal handler of the thread that runs the
request (a sync worker): keep it short, and take no lock.
"""

import functools
import select
import socket
import sys
import threading

from .waker import LoopWaker


class StopEvent:
    """server.stopping: set when this process begins a graceful stop.

    is_set() says whether this process has begun stopping; wait(timeout)
    returns True as soon as the stop begins (False on timeout); fileno() lets
    a handler select() on it beside its connection.  Behind wait() and
    fileno(), a self-pipe made on first use and never drained once written:
    set() is safe in a signal handler.
    """

    def __init__(self):
        self._pipe = None
        self._set = False
        self._making = threading.Lock()  # two handler threads may ask for fileno() at once

    def set(self):
        self._set = True
        if self._pipe is not None:
            self._pipe.wake()

    def is_set(self):
        return self._set

    def wait(self, timeout=None):
        if self._set:
            return True
        return _readable(self.fileno(), timeout)

    def fileno(self):
        with self._making:
            if self._pipe is None:
                self._pipe = LoopWaker()
                if self._set:  # (set() before the pipe was made: it could not wake it)
                    self._pipe.wake()
        return self._pipe.fileno()

    def close(self):
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


class HTTPStop:
    """Mixed into BaseHTTPRequestHandler subclasses in a worker (see tracking()).

    Between requests the handler waits for the first byte of the next one in
    rfile.peek() -- the read that readline() would have done anyway -- marked
    idle; stop_connection() shuts down the read side of an idle connection,
    so the wait ends with EOF, while bytes already received are still read
    and answered.  A connection's first request is never cut short: the
    client connected to send it (if the stop has begun, it gets
    FIRST_REQUEST_GRACE seconds to arrive).  Only a buffered rfile
    (rbufsize != 0) can peek; an unbuffered one is closed at its next
    request boundary instead.
    """

    FIRST_REQUEST_GRACE = 1.0
    _prefork_idle = False
    _prefork_served = False  # a request of this connection's has been read

    def handle_one_request(self):
        first = not self._prefork_served
        # Idle first, then look at the flag; stop_connection() sets the flag
        # first, then looks at idle: whichever runs second sees the other.
        self._prefork_idle = not first
        try:
            if self._prefork_connections.stopping and not self._request_still_comes(first):
                self.close_connection = True
                return
            if hasattr(self.rfile, "peek"):
                try:
                    waiting = self.rfile.peek(1)
                except TimeoutError as error:  # the handler's own timeout, as the stdlib says it
                    self.log_error("Request timed out: %r", error)
                    self.close_connection = True
                    return
                if not waiting:  # EOF: the client closed, or the stop did
                    self.close_connection = True
                    return
        finally:
            self._prefork_idle = False
        self._prefork_served = True
        super().handle_one_request()

    def _request_still_comes(self, first):
        """The stop has begun: whether a request is (or, first, soon will be) here to answer."""
        if first:
            return _readable(self.connection.fileno(), self.FIRST_REQUEST_GRACE)
        self._shut_reading()  # what the client already sent is read; nothing more
        return hasattr(self.rfile, "peek")

    def _shut_reading(self):
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # already closed by the client

    def end_headers(self):
        if self._prefork_connections.stopping and self.request_version != "HTTP/0.9":
            if not self.close_connection:
                self.send_header("Connection", "close")  # (sets close_connection)
            self.close_connection = True
        super().end_headers()

    def stop_connection(self):
        if self._prefork_idle:
            self._shut_reading()
        own = getattr(super(), "stop_connection", None)
        if own is not None:  # the handler's own, e.g. for a stream it upgraded to
            own()


class OpenConnections:
    """The live handlers of one worker process (and of each request child).

    stopping: whether the stop has begun in this process (stop_event is the
    one fact).  tracking(cls) makes the handler class the worker
    instantiates; stop() tells every live handler.  The registry is a dict
    touched only by atomic operations (a signal handler may call stop() in
    the middle of a request).
    """

    def __init__(self, stop_event):
        self._stop_event = stop_event
        self._handlers = {}

    @property
    def stopping(self):
        return self._stop_event.is_set()

    def tracking(self, handler_class):
        """A subclass of handler_class (same name) whose instances register
        themselves while they run, with HTTPStop for HTTP handlers; a class
        that can hear no stop (no stop_connection()) is left as it is.  A
        functools.partial of a class (as http.server's own test() makes) is
        made again over the subclass; another callable is left as it is."""
        if isinstance(handler_class, functools.partial):
            return functools.partial(self.tracking(handler_class.func),
                                     *handler_class.args, **handler_class.keywords)
        if not isinstance(handler_class, type):
            return handler_class
        if _is_http_handler(handler_class):
            bases = (HTTPStop, handler_class)
        elif hasattr(handler_class, "stop_connection"):
            bases = (handler_class,)
        else:
            return handler_class  # nothing to tell it: no cost per request
        registry = self

        def setup(self):
            registry._handlers[id(self)] = self
            try:
                super(tracked, self).setup()
            except BaseException:
                registry._handlers.pop(id(self), None)
                raise

        def finish(self):
            try:
                super(tracked, self).finish()
            finally:
                registry._handlers.pop(id(self), None)

        tracked = type(handler_class.__name__, bases, {
            "setup": setup, "finish": finish, "_prefork_connections": registry,
            "__module__": handler_class.__module__,
            "__qualname__": handler_class.__qualname__,
            "__doc__": handler_class.__doc__})
        return tracked

    def stop(self):
        """The stop has begun (stop_event is set): tell every live handler that can hear it."""
        for handler in list(self._handlers.values()):
            stop_connection = getattr(handler, "stop_connection", None)
            if stop_connection is not None:
                stop_connection()

    def forked(self):
        """In a ForkingMixIn request child: only the child's own handler will register."""
        self._handlers = {}


def _is_http_handler(handler_class):
    http_server = sys.modules.get("http.server")  # loaded if the handler is one of its
    return http_server is not None and issubclass(handler_class,
                                                  http_server.BaseHTTPRequestHandler)


def _readable(fd, timeout):
    """Whether fd becomes readable within timeout seconds (None: no limit).
    poll(), not select(): a worker with many connections has descriptors past 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
