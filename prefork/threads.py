"""How ThreadingMixIn runs its requests.

By default, as the standard library does: a new thread per request.  Two
options make a threading server (a prefork worker, typically) cheaper:

* reuse_threads: a request thread stays alive and is handed later requests,
  a pool that grows to the peak concurrency.  Starting a thread costs about
  100 microseconds; a hand-off costs a wake-up.
* inline_quick_requests: while requests are quick (their recent average
  under QUICK) and none is in flight, the serve loop's own thread runs the
  next one, as a synchronous server would: no hand-off, no wake-up, no
  thread contending for the GIL -- and, while they run there, the loop takes
  what is queued in a row, as a synchronous server does (one poll for many;
  ThreadingMixIn._accept_batch).  Otherwise requests go to threads, so that
  the loop never waits behind busy request threads for the GIL.  Should one
  inline request stall the loop (a slow client, say) for STALL, a watcher
  thread accepts in the loop's place, handing requests to threads, until the
  loop's thread is back.

adaptive_threads (with inline_quick_requests) bounds how many requests a
worker takes at once by what its core can serve.  A process runs Python on
one core at a time (the GIL): once a request thread keeps the GIL busy,
another request would only queue behind it -- and threads taking turns on
the GIL cost CPU of their own.  So, while requests are in flight, the loop
asks the GIL before it accepts: it lets go of it and takes it back
(time.sleep(GIL_PROBE)).  Back within GIL_BUSY, the threads mostly wait on
I/O: the worker accepts, up to max_threads.  Later, a thread ran Python all
that time: the worker leaves new connections in the kernel's queue, for a
worker with a core to spare, until one of its requests ends -- or HOLD
passes (it then takes one anyway: no other worker did) -- and its requests
count as CPU-bound: the next one it takes with none in flight runs inline,
as in a synchronous worker (the watcher looking only every CPU_BOUND_LOOK),
and so do the ones after it, until one, alone, shows it was not on the CPU
for CPU_BOUND of its time: the next one goes to a thread again.  So
CPU-bound requests get one in flight per worker, I/O-bound ones as many as
they need.  Requests that last LONG on average -- long-lived connections --
are taken as they come: one left queued would wait for another to end.  So
are all until SETTLED have ended: an average of fewer says little (after one
quick request, a readiness probe say, this worker alone would decline a
burst of long-lived connections, and pile them on the others).  With no
request in flight the GIL is not asked: idle and quick servers pay nothing;
nor while the requests in flight would run less than GIL_DEMAND of a core,
by their recent share of time on the CPU (requests that mostly wait keep
the GIL free: asking, which costs a sleep and context switches, would tell
nothing).  The GIL is asked as the loop starts to wait: a connection that
comes during that wait is taken on that answer (declining it then would
strand it -- the kernel woke this worker alone, EPOLLEXCLUSIVE).

A request that raises what is not an Exception (sys.exit(), say) ends its
thread, as in the standard library: a pooled thread leaves the pool.  An
inline request ends as if it had a thread of its own -- reported through
threading.excepthook, the loop serving on -- except for KeyboardInterrupt,
which stops the loop as it would with the request in another thread.
"""

import select
import sys
import threading
from queue import SimpleQueue
from time import monotonic, sleep

QUICK = 0.001    # seconds: requests this quick, on average, run in the loop's thread
STALL = 0.01     # seconds an inline request may hold the loop before the watcher steps in
# Seconds between the watcher's looks while inline requests are CPU-bound
# (adaptive_threads): each look takes the GIL from the request running, and,
# the GIL being busy, the watcher would not accept anyway.  On a busy machine
# a look costs the loop's thread a trip through the scheduler's run queue
# (measured under workload (b) of ./scripts/bench: looking every 50 ms cost
# 3% of the requests a second, every 250 ms nothing measurable).  Only a
# CPU-bound request that stalls (on a slow client, say) is seen later -- a
# synchronous worker never sees it -- and other workers take the connections
# meanwhile: the kernel wakes one that waits.
CPU_BOUND_LOOK = 0.25
DECAY = 0.1      # weight of the newest request in the average
IDLE_CHECKS = 100  # the watcher sleeps after this many checks without an inline request
GIL_BUSY = 0.001  # seconds: a GIL given up and taken back this late was busy (adaptive_threads)
# How long the loop lets go of the GIL to ask.  From 3.11, sleep(0) blocks in
# clock_nanosleep (the timer slack: ~50-80 us), long enough for a waiting thread
# to take the GIL; on 3.10 it takes the GIL straight back (a waiting thread got
# it in 16 of 200 tries): sleep a microsecond there, which costs the same.
GIL_PROBE = 0 if sys.version_info >= (3, 11) else 1e-6
HOLD = 0.005     # seconds a busy worker leaves connections queued before it takes one anyway
CPU_BOUND = 0.25  # share of its time on the CPU that makes an inline request CPU-bound
# Cores of Python the requests in flight would run, by their recent share of
# time on the CPU: below this, the GIL cannot be kept busy, and is not asked.
GIL_DEMAND = 0.5
LONG = 0.5       # seconds: requests this long on average are long-lived connections
SETTLED = 10     # requests ended before their average counts (about 1 / DECAY)


class _ThreadState(threading.local):
    """What RequestThreads notes of the thread it runs in (class attributes:
    the defaults, read without the exception a missing attribute costs)."""

    pooled = False  # whether this is a pooled thread
    share = 1.0     # the share of its last request's time it was on the CPU


class RequestThreads:
    """The request threads of one server: how many requests run, which
    threads to join at close, the idle pooled threads, and the watcher."""

    def __init__(self, server):
        self._server = server
        self._lock = threading.Lock()
        self._joinable = set()
        self._pooled = 0          # threads that serve request after request
        self._idle = 0            # ... of which, waiting for the next one
        self._handoff = SimpleQueue()
        self.running = 0          # requests in flight
        self.average = 0.0        # recent request duration, seconds
        self.ended = 0            # requests ended, up to SETTLED: is the average known
        self.cpu_share = 1.0      # recent requests' share of their time on the CPU
        self.inline_since = 0.0   # start of the loop thread's inline request; 0: none
        self._local = _ThreadState()
        self._watcher = None
        self._watcher_sleeping = False
        self._wake_watcher = threading.Event()
        self._closed = False
        self.cpu_bound = False    # the next request with none in flight runs inline
        self.paused = False       # the loop does not accept (until a request ends)
        self.held_since = 0.0     # paused for a busy GIL since; 0: not

    # -- whether to take more: max_threads, adaptive_threads -----------------

    def accepting(self):
        """Whether the loop may take another request now; it asks before each
        accept (ThreadingMixIn._accepting_requests)."""
        server = self._server
        if server.max_threads is not None and self.running >= server.max_threads:
            return self._pause(held=False)  # the next request to end wakes the loop
        if not (server.adaptive_threads and self.running
                and self.ended >= SETTLED and self.average < LONG):
            # Nothing in flight; or long-lived connections (they last long,
            # or too few have ended to tell): one queued would wait for one to end.
            return self._resume()
        if self.running * self.cpu_share < GIL_DEMAND:
            return self._resume()  # requests that mostly wait: the GIL is free
        asked = monotonic()
        sleep(GIL_PROBE)  # let go of the GIL: a runnable request thread takes it
        now = monotonic()
        if now - asked < GIL_BUSY:
            return self._resume()
        self.cpu_bound = True  # (until a request, alone, shows it waited)
        if self.held_since and now - self.held_since >= HOLD:
            # Watch the listener again (no timer while watching): a connection
            # left queued so long, no other worker took: take it.
            return self._resume()
        return self._pause(held=True)

    def _pause(self, held):
        self.paused = True
        if not held:
            self.held_since = 0.0
        elif not self.held_since:
            self.held_since = monotonic()
        return False

    def _resume(self):
        self.paused = False
        self.held_since = 0.0
        return True

    def next_look_in(self):
        """Paused for a busy GIL: the seconds until HOLD runs out, for the loop."""
        return self.held_since + HOLD - monotonic() if self.held_since else None

    # -- where a request runs --------------------------------------------

    def inline_next(self):
        """Whether the loop's thread would run the next request itself."""
        return (self._server.inline_quick_requests and not self.running
                and (self.average < QUICK or self.cpu_bound))

    def dispatch(self, request, client_address):
        """Run a request: inline -- alone, in the loop's thread -- if requests are
        quick, or CPU-bound (adaptive_threads: see the module's docstring);
        else in a thread."""
        if self.inline_next() and threading.current_thread() is not self._watcher:
            self._run_inline(request, client_address)
        else:
            self._start(request, client_address)

    def _run_inline(self, request, client_address):
        with self._lock:
            self.running += 1
        self.inline_since = monotonic()  # then look at the watcher: see _watch()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True,
                                             name="request-watcher")
            self._watcher.start()
        elif self._watcher_sleeping:
            self._wake_watcher.set()
        try:
            self._server.process_request_thread(request, client_address)
        except KeyboardInterrupt:
            raise  # Ctrl-C reaches the loop's thread wherever the request runs
        except BaseException:
            # In a thread of its own, it would end that thread, not the loop.
            threading.excepthook(threading.ExceptHookArgs(
                [*sys.exc_info(), threading.current_thread()]))
        finally:
            if self.cpu_bound:  # alone, it shows what it is: on the CPU, or waiting
                self.cpu_bound = self._local.share >= CPU_BOUND
            self.inline_since = 0.0

    def _start(self, request, client_address):
        """Hand the request to an idle pooled thread, or start a thread for it."""
        server = self._server
        reuse = server.reuse_threads
        with self._lock:
            self.running += 1
            if reuse and self._idle:
                self._idle -= 1
                self._handoff.put((request, client_address))
                return
        thread = threading.Thread(
            target=self._serve_requests if reuse else server.process_request_thread,
            args=(request, client_address), daemon=server.daemon_threads)
        with self._lock:
            self._pooled += reuse
            if server.block_on_close and not thread.daemon:
                self._joinable.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self.running -= 1
                self._pooled -= reuse
                self._joinable.discard(thread)
            raise

    def _serve_requests(self, request, client_address):
        """A pooled thread's life: this request, then each one handed over,
        until close() hands it None."""
        self._local.pooled = True
        while request is not None:
            self._server.process_request_thread(request, client_address)  # -> finished()
            request, client_address = self._handoff.get()

    def finished(self, duration, cpu, survived):
        """A request is done, in the thread that ran it, after `duration`
        seconds, `cpu` of them on the CPU; return whether the loop, paused,
        should look again.

        survived: False when process_request_thread() raises, which ends
        the thread: a pooled one is then no longer counted, idle or pooled.
        """
        pooled = self._local.pooled
        share = self._local.share = min(1.0, cpu / duration) if duration > 0 else 1.0
        with self._lock:
            self.running -= 1
            # (The first duration as it is: from 0, long-lived connections would
            # look short for their first few ends.)
            self.average += DECAY * (duration - self.average) if self.ended else duration
            self.ended = min(self.ended + 1, SETTLED)
            self.cpu_share += DECAY * (share - self.cpu_share)
            if pooled and survived:
                self._idle += 1  # about to wait in _serve_requests for the next
            else:
                self._joinable.discard(threading.current_thread())
                if pooled and not self._closed:  # (if closed, close() counted it out)
                    self._pooled -= 1
            return self.paused

    # -- the watcher -------------------------------------------------------

    def _watch(self):
        """While the loop's thread has been in one inline request for STALL,
        accept in its place; look every STALL (CPU_BOUND_LOOK while requests
        are CPU-bound); sleep when there has long been no inline request."""
        idle_checks = 0
        while not self._closed:
            since = self.inline_since
            if since and monotonic() - since >= STALL:
                self._accept_for_the_loop(since)
                idle_checks = 0
            elif since:
                idle_checks = 0
            else:
                idle_checks += 1
                if idle_checks >= IDLE_CHECKS:
                    self._sleep_until_inline_request()
                    idle_checks = 0
                    continue
            select.select([], [], [], CPU_BOUND_LOOK if self.cpu_bound else STALL)

    def _sleep_until_inline_request(self):
        # Say we sleep, then look: _run_inline sets inline_since, then looks
        # at _watcher_sleeping; whichever writes last, one sees the other.
        self._wake_watcher.clear()
        self._watcher_sleeping = True
        if not self.inline_since and not self._closed:
            self._wake_watcher.wait()
        self._watcher_sleeping = False

    def _accept_for_the_loop(self, since):
        server = self._server
        while (self.inline_since == since and not self._closed
               and server._serve_loop.serving):
            try:
                ready = server._accepting_requests() and select.select([server], [], [], STALL)[0]
            except (OSError, ValueError):
                return  # the listener was closed: the worker is stopping
            if ready:
                server._handle_request_noblock()  # -> dispatch() -> a thread
            else:
                select.select([], [], [], STALL)

    # -- closing -----------------------------------------------------------

    def close(self, wait):
        """Let the pooled threads and the watcher go; with wait, join the threads."""
        with self._lock:
            self._closed = True  # under the lock, for finished()
            threads = list(self._joinable)
            for _ in range(self._pooled):
                self._handoff.put((None, None))
            self._pooled = 0
        self._wake_watcher.set()
        if wait:
            for thread in threads:
                thread.join()
