"""ServeLoop: the serve_forever() loop, kept apart from the server it drives.

One loop serves three roles: BaseServer.serve_forever(), each prefork worker
(also over server classes from the standard library's socketserver), and the
prefork master, which never accepts and only supervises in service_actions().

Every turn the loop asks the server whether it is accepting requests
(``_accepting_requests()``, True if the server has no such method), waits until
the listener is readable, the loop is woken, or poll_interval passes, takes one
request with ``_handle_request_noblock()`` -- and, while that finds more
queued, up to the server's ``_accept_batch`` in a row without polling again --
and calls ``service_actions()``.

A server may listen on several sockets (the prefork command's repeated
--bind): ``_listening_sockets()`` returns them; the loop watches each and,
before taking a request from one, makes it ``server.socket``, so that the
server's get_request() -- prefork's or the standard library's -- reads it.
"""

import os
import select
import threading

from .waker import LoopWaker

_EPOLL = hasattr(select, "epoll")


class _Poller:
    """Readiness of a few descriptors: epoll on Linux, poll(2) elsewhere.

    With wake_one, the listener is registered with EPOLLEXCLUSIVE, so that of
    the processes sharing it only one is woken per connection (Linux >= 4.5).
    """

    def __init__(self, wake_one=False):
        if _EPOLL:
            self._poller = select.epoll()
            self._read = select.EPOLLIN
            exclusive = getattr(select, "EPOLLEXCLUSIVE", 0) if wake_one else 0
            self._listener_read = self._read | exclusive
        else:
            self._poller = select.poll()
            self._read = self._listener_read = select.POLLIN

    def add(self, fd, listener=False):
        self._poller.register(fd, self._listener_read if listener else self._read)

    def remove(self, fd):
        self._poller.unregister(fd)

    def wait(self, timeout):
        """The descriptors that became readable within timeout seconds (None: forever)."""
        if _EPOLL:
            events = self._poller.poll(-1 if timeout is None else timeout)
        else:
            events = self._poller.poll(None if timeout is None else timeout * 1000)
        return [fd for fd, _ in events]

    def close(self):
        if _EPOLL:
            self._poller.close()


class ServeLoop:
    """Run a server's request loop until stop(), from any thread or signal handler."""

    def __init__(self):
        self._waker = None
        self._stop_requested = False
        self._stopped = threading.Event()  # as the stdlib: stop() waits for a run
        self._thread = None
        self._readers = {}  # fd -> callback: more descriptors to watch (add_reader)
        self._readers_pid = os.getpid()  # a forked child does not inherit them
        self._poller = None  # while run() runs
        self._owed = []  # listener fds a wake-up is owed to, not taken from yet
        self._after_owed = []  # callbacks that wait for them

    @property
    def waker(self):
        """This process's self-pipe (a forked child makes its own)."""
        if self._waker is not None and self._waker.pid != os.getpid():
            self._waker.close()  # our copies of the parent's: its own stay open
            self._waker = None
        if self._waker is None:
            self._waker = LoopWaker()
        return self._waker

    def run(self, server, poll_interval=0.5, wake_one=False):
        """Serve until stop(): one request and one service_actions() a turn.

        wake_one: the listener is shared with other processes, each woken
        alone for a connection (EPOLLEXCLUSIVE).  Such a wake-up is this
        process's alone: a stop that comes with it still takes that request,
        or nobody else would be woken for it -- and a listener that stop
        closes is closed after (when_wakeups_taken).
        """
        self._stopped.clear()
        self._thread = threading.get_ident()
        waker = self.waker
        poller = _Poller(wake_one)
        accepting = getattr(server, "_accepting_requests", lambda: True)
        next_turn_in = getattr(server, "_next_turn_in", lambda: None)
        self._poller = poller
        if self._readers_pid != os.getpid():
            self._readers, self._readers_pid = {}, os.getpid()
        try:
            poller.add(waker.fileno())
            for fd in self._readers:
                poller.add(fd)
            listeners = _listeners_of(server)
            watching = False
            while not self._stop_requested:
                if accepting() != watching:
                    watching = not watching
                    for fd in listeners:
                        if watching:
                            poller.add(fd, listener=True)
                        else:
                            poller.remove(fd)
                due = next_turn_in()
                self._owed = list(listeners) if watching else []  # (any may wake the wait)
                ready = poller.wait(poll_interval if due is None
                                    else max(0.0, min(due, poll_interval)))
                self._owed = [fd for fd in ready if fd in listeners]
                # stop() during the wait: leave before taking another request.
                if self._stop_requested:
                    if wake_one:
                        for fd in list(self._owed):
                            self._take_owed(server, listeners, fd, 1, accepting)
                    break
                for fd in ready:
                    if fd in self._readers:  # (first: a listener closed since may
                        self._readers[fd]()  # have left its number to a reader)
                    elif fd in listeners:  # (the batch may change turn by turn)
                        self._take_owed(server, listeners, fd,
                                        getattr(server, "_accept_batch", 1), accepting)
                    else:
                        waker.drain()
                self._paid()
                server.service_actions()
        finally:
            self._paid()
            self._poller = None
            poller.close()
            self._stop_requested = False
            self._thread = None
            self._stopped.set()

    def _take(self, server, listener, batch, accepting):
        """Take up to batch requests queued on listener (None: the only one)."""
        if listener is not None:
            server.socket = listener
        for _ in range(batch):
            # Only prefork's servers say whether they took a request.
            if not server._handle_request_noblock() or self._stop_requested or not accepting():
                break

    def _take_owed(self, server, listeners, fd, batch, accepting):
        self._owed.remove(fd)
        self._take(server, listeners[fd], batch, accepting)

    def _paid(self):
        """Every wake-up of the last wait taken: run what waited for it."""
        self._owed = []
        while self._after_owed:
            self._after_owed.pop(0)()

    def when_wakeups_taken(self, callback):
        """Call callback() now -- or, if run()'s wait may have been woken for a
        connection not taken yet (a signal handler that interrupted the wait),
        once the loop has taken it.  With wake_one the kernel wakes this
        process alone for a connection: a listener closed in between (a
        worker's TERM handler closes its copies) would leave that connection
        queued, every other process that shares the listener still asleep.
        While a request runs, nothing is owed: callback() runs at once.  From
        the loop's thread (a signal handler runs in it)."""
        if self._owed:
            self._after_owed.append(callback)
        else:
            callback()

    def add_reader(self, fd, callback):
        """Call callback() in the loop's thread when fd is readable (the prefork
        master's control socket and its clients), in this process only (not in
        a forked child).  From the loop's thread only."""
        self._readers[fd] = callback
        if self._poller is not None:
            self._poller.add(fd)

    def remove_reader(self, fd):
        if self._readers.pop(fd, None) is not None and self._poller is not None:
            self._poller.remove(fd)

    def serve_readers(self, timeout):
        """Outside run(): wait up to timeout seconds for a wake-up or a reader,
        and call the readers that are ready -- so that the prefork master's
        control socket and health listener still answer while it waits for
        its workers to finish."""
        poller = select.poll()
        waker = self.waker
        for fd in [waker.fileno(), *self._readers]:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(max(0.0, timeout) * 1000):
            if fd in self._readers:
                self._readers[fd]()
            elif fd == waker.fileno():
                waker.drain()

    @property
    def serving(self):
        """Whether run() is taking requests (running, and not asked to stop)."""
        return self._thread is not None and not self._stop_requested

    def wake(self):
        """Start the next turn now.  Safe in a signal handler and from any thread."""
        waker = self._waker
        if waker is not None and waker.pid == os.getpid():
            waker.wake()

    def request_stop(self):
        """Ask the loop to stop after the current turn; do not wait."""
        self._stop_requested = True
        self.wake()

    def wait_stopped(self):
        """Wait until the loop has stopped, unless called from the loop's own thread."""
        if self._thread != threading.get_ident():
            self._stopped.wait()

    def stop(self):
        """Stop the loop and, from another thread, wait until it has."""
        self.request_stop()
        self.wait_stopped()

    def close(self):
        if self._waker is not None and self._waker.pid == os.getpid():
            self._waker.close()
        self._waker = None


def _listeners_of(server):
    """{fd: socket} of the sockets the loop watches; {fd: None} for a server
    with one listener (it is server.socket already)."""
    sockets = getattr(server, "_listening_sockets", None)
    sockets = sockets() if sockets else ()
    if len(sockets) > 1:
        return {sock.fileno(): sock for sock in sockets}
    return {server.fileno(): None}
