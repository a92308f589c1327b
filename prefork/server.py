"""The server classes: BaseServer and its TCP, UDP and Unix-socket subclasses.

The same public interface as the standard library's ``socketserver``, with
three differences that only show where the stdlib would hang:

* ``shutdown()`` wakes the loop through a self-pipe, so it returns at once
  rather than after ``poll_interval``, and it may be called from the serving
  thread itself (a handler, a signal handler) without deadlocking.
* A listening socket shared with other processes never blocks the loop: the
  stream listener is non-blocking and datagrams are read with MSG_DONTWAIT, so
  a request taken by another process is simply "no request this turn".  The
  timeout the listener had before (the user's, or the default timeout) still
  bounds handle_request(), though ``socket.gettimeout()`` now says 0.0.
* The loop asks ``_accepting_requests()`` before it watches the listener, so a
  mix-in (``ThreadingMixIn.max_threads``) can pause accepting and leave new
  connections in the kernel's queue for other workers.
"""

import selectors
import socket
import sys
import traceback
from time import monotonic

from .loop import ServeLoop

# Linux never passes a listener's O_NONBLOCK on to accepted sockets; BSDs and
# macOS do, behind the back of Python's socket object.
_ACCEPTED_INHERIT_NONBLOCK = not sys.platform.startswith("linux")

# poll(2) is cheaper than select(2) for a handful of descriptors.
if hasattr(selectors, "PollSelector"):
    ServerSelector = selectors.PollSelector
else:
    ServerSelector = selectors.SelectSelector


class BaseServer:
    """The serve loop and the request pipeline, independent of socket type.

    Callers use serve_forever() (or handle_request() for one request),
    shutdown(), server_close() or a with-block, and fileno() for selectors.

    A request goes get_request() -> verify_request() -> process_request()
    -> finish_request() (makes a RequestHandlerClass) -> shutdown_request()
    -> close_request().  Override those to change a step; handle_error() to
    report a handler's Exception; handle_timeout() for handle_request()
    waiting longer than `timeout`; service_actions() for work on every turn
    of the loop.

    Class variables: timeout (handle_request()'s wait; None: none).

    prefork's own protocol between the serve loop (loop.py) and the mix-ins
    (the standard library has no such thing; everything here works without it):

    _accepting_requests()      may be overridden: whether the loop watches the
                               listener this turn (False leaves new requests in
                               the kernel's queue: ThreadingMixIn.max_threads,
                               ForkingMixIn.max_children, the prefork master)
    _wake_loop()               call it to start the loop's next turn now, e.g.
                               when _accepting_requests() changes; signal-safe
    _next_turn_in()            may be overridden: the most seconds the loop may
                               wait for the next turn (None: poll_interval),
                               for what falls due at a time (the prefork
                               master's drain_delay, ThreadingMixIn's hold
                               with adaptive_threads)
    _handle_request_noblock()  takes one request if there is one; returns True
                               if it did, so that the loop may take another
    _accept_batch              class variable (or property): requests taken in
                               a row while more are queued, before
                               service_actions()
    _serve_loop                the ServeLoop that serve_forever() runs, made
                               here: the one loop of this server
    """

    timeout = None

    # The listener's timeout before server_activate() made it non-blocking,
    # which handle_request() honours in place of the 0.0 gettimeout() says.
    # By default, a listener found non-blocking is one the user made so.
    _listener_timeout = 0.0

    # Requests taken in a row while the listener has more queued (nginx's
    # multi_accept, bounded): under load, a synchronous server saves a poll
    # per request.  The mix-ins that hand requests off take one at a time
    # (ThreadingMixIn excepted while it runs them inline: see its _accept_batch).
    _accept_batch = 16

    def __init__(self, server_address, RequestHandlerClass):
        """Store the address and handler class.  Extend, do not replace."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._serve_loop = ServeLoop()

    def server_activate(self):
        """Called by constructor to activate the server.  May be overridden."""

    # -- the loop ---------------------------------------------------------

    def serve_forever(self, poll_interval=0.5):
        """Handle one request at a time until shutdown().

        Every turn also calls service_actions().  The loop sleeps at most
        poll_interval seconds between turns, and is woken at once by
        shutdown() or by _wake_loop().
        """
        self._serve_loop.run(self, poll_interval)

    def shutdown(self):
        """Stop the serve_forever() loop.

        Called from another thread, it waits until the loop has stopped.
        Called from the serving thread itself (a request handler, a signal
        handler), it only asks the loop to stop after the current turn.
        """
        self._serve_loop.stop()

    def service_actions(self):
        """Called by the serve_forever() loop every turn.

        May be overridden by a subclass / mix-in to do periodic work, such as
        reaping children (ForkingMixIn) or supervising workers (PreforkMixIn).
        """

    def _accepting_requests(self):
        """Whether serve_forever() should watch the listener this turn.

        Return False to leave new requests queued in the kernel (for example
        while every allowed thread is busy); call _wake_loop() when that
        changes.
        """
        return True

    def _wake_loop(self):
        """Make serve_forever() start its next turn now.  Signal-handler safe."""
        self._serve_loop.wake()

    def _next_turn_in(self):
        """The most seconds serve_forever() may wait for its next turn; None:
        poll_interval.  Override for something due at a given time."""
        return None

    # -- one request ------------------------------------------------------

    def handle_request(self):
        """Handle one request, waiting at most timeout seconds for it.

        The listening socket's own timeout, if shorter, bounds the wait too
        (as the user set it, even if server_activate() has since made the
        socket non-blocking).  Calls handle_timeout() if no request arrives
        in time.
        """
        timeout = self.socket.gettimeout()
        if timeout == 0.0:
            timeout = self._listener_timeout
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        if timeout is not None:
            deadline = monotonic() + timeout

        with ServerSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            while True:
                if selector.select(timeout):
                    self._handle_request_noblock()
                    return
                if timeout is not None:
                    timeout = deadline - monotonic()
                    if timeout < 0:
                        return self.handle_timeout()

    def _handle_request_noblock(self):
        """Take one request, if there is one, and process it.

        A failed get_request() (including EAGAIN, when another process took
        the request first) means no request this turn.  Returns True if a
        request was taken, so that the loop may try for another at once.
        """
        try:
            request, client_address = self.get_request()
        except OSError:
            return False
        if self.verify_request(request, client_address):
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)
            except BaseException:
                self.shutdown_request(request)
                raise
        else:
            self.shutdown_request(request)
        return True

    def handle_timeout(self):
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """

    def verify_request(self, request, client_address):
        """Return True if we should proceed with this request.  May be overridden."""
        return True

    def process_request(self, request, client_address):
        """Call finish_request.  Overridden by ForkingMixIn and ThreadingMixIn."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self):
        """Called to clean up the server.  May be overridden."""
        self._serve_loop.close()

    def finish_request(self, request, client_address):
        """Finish one request by instantiating RequestHandlerClass."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""

    def handle_error(self, request, client_address):
        """Handle an error gracefully.  May be overridden.

        The default prints a traceback and continues.
        """
        print("-" * 40, file=sys.stderr)
        print("Exception occurred during processing of request from",
              client_address, file=sys.stderr)
        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.server_close()


class TCPServer(BaseServer):
    """A synchronous server on a listening socket: TCP unless overridden.

    The constructor makes the socket and, if bind_and_activate, binds it
    (server_bind) and listens (server_activate); a failure closes it.
    Override the class variables address_family, socket_type,
    request_queue_size (the listen backlog), allow_reuse_address and
    allow_reuse_port to change the socket.
    """

    address_family = socket.AF_INET

    socket_type = socket.SOCK_STREAM

    request_queue_size = 5

    allow_reuse_address = False

    allow_reuse_port = False

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True):
        """Make the socket, and bind and listen unless told not to."""
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self):
        """Called by constructor to bind the socket.  May be overridden."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Linux 6.12.9+ refuses SO_REUSEPORT (EOPNOTSUPP) outside AF_INET/AF_INET6;
        # set it only there, as later CPython releases do (gh-128916).
        if (self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT")
                and self.address_family in (socket.AF_INET, socket.AF_INET6)):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Called by constructor to activate the server.  May be overridden.

        Listens, and makes the listener non-blocking: when several processes
        share it, an accept() that finds the queue empty must not block.  The
        timeout it had is kept for handle_request().
        """
        self.socket.listen(self.request_queue_size)
        self._listener_timeout = self.socket.gettimeout()
        self.socket.setblocking(False)

    def server_close(self):
        """Called to clean up the server.  May be overridden."""
        self.socket.close()
        super().server_close()

    def fileno(self):
        """Return socket file number.  Interface required by selectors."""
        return self.socket.fileno()

    def get_request(self):
        """Get the request and client address from the socket.  May be overridden.

        The accepted socket is blocking (or takes the default timeout), even
        where the platform lets it inherit O_NONBLOCK from the listener.
        """
        request, client_address = self.socket.accept()
        if _ACCEPTED_INHERIT_NONBLOCK:
            request.settimeout(socket.getdefaulttimeout())
        return request, client_address

    def shutdown_request(self, request):
        """Called to shutdown and close an individual request."""
        try:
            # Send FIN now: close() alone would wait for every reference to
            # the socket (a handler's makefile(), say) to go.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer may already be gone (ENOTCONN)
        self.close_request(request)

    def close_request(self, request):
        """Called to clean up an individual request."""
        request.close()


class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False

    allow_reuse_port = False

    socket_type = socket.SOCK_DGRAM

    max_packet_size = 8192

    def get_request(self):
        """Read one datagram without blocking: another process may have taken it."""
        data, client_addr = self.socket.recvfrom(self.max_packet_size, socket.MSG_DONTWAIT)
        return (data, self.socket), client_addr

    def server_activate(self):
        """Datagram sockets do not listen."""

    def shutdown_request(self, request):
        # No need to shutdown anything.
        self.close_request(request)

    def close_request(self, request):
        # No need to close anything.
        pass


class UnixStreamServer(TCPServer):
    """TCPServer over a Unix-domain stream socket (server_address is a path)."""

    address_family = socket.AF_UNIX


class UnixDatagramServer(UDPServer):
    """UDPServer over a Unix-domain datagram socket (server_address is a path)."""

    address_family = socket.AF_UNIX
