"""ForkingMixIn and ThreadingMixIn: a process or a thread per request.

Put the mix-in first, before the server class, since it overrides methods the
server class defines::

    class ThreadingUDPServer(ThreadingMixIn, UDPServer): pass
"""

import os
from time import monotonic, thread_time

from .server import BaseServer, TCPServer, UDPServer, UnixDatagramServer, UnixStreamServer
from .threads import RequestThreads


class ForkingMixIn:
    """Mix-in class to handle each request in a new process.

    max_children bounds the live children: at the bound, the server waits for
    one to exit before it forks again.  server_close() waits for every child
    unless block_on_close is false.
    """

    timeout = 300
    _accept_batch = 1
    active_children = None
    max_children = 40
    # If true, server_close() waits until all child processes complete.
    block_on_close = True

    def collect_children(self, *, blocking=False):
        """Reap exited children; with blocking=True, wait for all of them."""
        if self.active_children is None:
            return

        # At the bound, wait for children to exit before taking more requests.
        while len(self.active_children) >= self.max_children:
            try:
                pid, _ = os.waitpid(-1, 0)
                self.active_children.discard(pid)
            except ChildProcessError:
                self.active_children.clear()  # we have no children left
            except OSError:
                break

        for pid in self.active_children.copy():
            try:
                reaped, _ = os.waitpid(pid, 0 if blocking else os.WNOHANG)
                if reaped:
                    self.active_children.discard(pid)
            except ChildProcessError:
                self.active_children.discard(pid)  # someone else reaped it
            except OSError:
                pass

    def _accepting_requests(self):
        """Not at the bound: there, service_actions() waits for a child first."""
        return self.active_children is None or len(self.active_children) < self.max_children

    def handle_timeout(self):
        """Reap children when handle_request() times out."""
        self.collect_children()

    def service_actions(self):
        """Reap children on every turn of serve_forever()."""
        self.collect_children()

    def process_request(self, request, client_address):
        """Fork a child to handle the request; the child exits with 0 or 1."""
        pid = os.fork()
        if pid:
            # Parent: the child owns the request now.
            if self.active_children is None:
                self.active_children = set()
            self.active_children.add(pid)
            self.close_request(request)
            return
        # Child: handle the request and leave without running the parent's
        # clean-up (atexit handlers, finally blocks up the stack).
        status = 1
        try:
            self.finish_request(request, client_address)
            status = 0
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                os._exit(status)

    def server_close(self):
        super().server_close()
        self.collect_children(blocking=self.block_on_close)


class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread.

    daemon_threads: whether request threads are daemons (the interpreter may
    exit without waiting for them).  block_on_close: whether server_close()
    waits for the non-daemon threads.  max_threads: how many requests may run
    at once (None, the default, is unbounded, as in the standard library); at
    the bound the server stops accepting until a request finishes, so the
    kernel can hand new connections to another, idle, worker.
    reuse_threads: keep each request thread alive to serve later requests --
    a pool that grows to the peak concurrency (bounded by max_threads).
    inline_quick_requests: while requests are quick, run them in the serve
    loop's own thread, as a synchronous server would (see threads.py).
    adaptive_threads: while a request thread keeps the GIL busy, take no
    more requests -- leave them to workers with a core to spare -- and run
    the next inline (see threads.py).  All three False, as in the standard
    library; PreforkMixIn turns them on.
    """

    # Decides how threads will act upon termination of the main process.
    daemon_threads = False
    # If true, server_close() waits until all non-daemonic threads terminate.
    block_on_close = True
    max_threads = None
    reuse_threads = False
    inline_quick_requests = False
    adaptive_threads = False

    @property
    def _accept_batch(self):
        """Requests taken in a row: while they run inline (threads.py), as
        many as a synchronous server takes; else one, back to waiting at
        once -- the request threads need the GIL."""
        return BaseServer._accept_batch if self._request_threads().inline_next() else 1

    def _request_threads(self):
        threads = vars(self).get("_threads_in_flight")
        if threads is None:
            threads = self._threads_in_flight = RequestThreads(self)
        return threads

    def process_request_thread(self, request, client_address):
        """Same as in BaseServer, but as a thread.

        In addition, exception handling is done here.
        """
        # (CPU time: what adaptive_threads judges requests by; else not read.)
        measured = self.adaptive_threads
        started, cpu_started = monotonic(), thread_time() if measured else 0.0
        survived = False  # whatever escapes below ends this thread, as in the stdlib
        try:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            survived = True
        finally:
            cpu = thread_time() - cpu_started if measured else 0.0
            if self._request_threads().finished(monotonic() - started, cpu, survived):
                self._wake_loop()  # it paused: it may accept again

    def process_request(self, request, client_address):
        """Start a new thread to process the request (or see threads.py)."""
        self._request_threads().dispatch(request, client_address)

    def _accepting_requests(self):
        return self._request_threads().accepting()

    def _next_turn_in(self):
        return self._request_threads().next_look_in()

    def server_close(self):
        super().server_close()
        self._request_threads().close(wait=self.block_on_close)


class ForkingUDPServer(ForkingMixIn, UDPServer): pass
class ForkingTCPServer(ForkingMixIn, TCPServer): pass
class ThreadingUDPServer(ThreadingMixIn, UDPServer): pass
class ThreadingTCPServer(ThreadingMixIn, TCPServer): pass
class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): pass
class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): pass
class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): pass
class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): pass
