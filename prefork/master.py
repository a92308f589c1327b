"""PreforkMixIn: bind once in the master, pre-fork workers, supervise them.

    class Server(PreforkMixIn, ThreadingMixIn, TCPServer):
        workers = 4

    with Server(("127.0.0.1", 8000), Handler) as server:
        server.serve_forever()

The constructor binds and listens as usual.  serve_forever() then runs, in the
master, a loop that never accepts: signal handlers only record the signal and
wake it, and service_actions() does all the work every turn -- dispatch the
recorded signals, reap exited workers, enforce the scoreboard's timeouts and
limits, and keep the right number of workers of the current generation.  Each
worker runs the next class's serve loop on the inherited listener
(see worker.py).

Signals to the master:
  TERM        graceful stop: workers finish their requests (graceful_timeout)
  INT, QUIT   quick stop
  HUP         reload: a new generation of workers, the old one retired once
              the new one is ready (the handler's module is re-imported
              unless preload_app)
  TTIN, TTOU  one worker more, one fewer
  USR1        reopen log files, in the master and every worker
  CHLD        a worker exited: reaped on the next turn
"""

import gc
import logging
import math
import os
import random
import select
import signal
import socket
import threading
from time import monotonic

from . import logfiles, scoreboard
from .listeners import default_backlog, format_address
from .loop import ServeLoop
from .proctitle import set_title
from .worker import WorkerInfo, WorkerProcess

log = logging.getLogger("prefork")

MASTER_SIGNALS = {
    signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGQUIT: "quit",
    signal.SIGHUP: "hup", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou",
    signal.SIGUSR1: "usr1", signal.SIGCHLD: "chld",
}

MEMORY_CHECK_INTERVAL = 1.0   # seconds between psutil looks at workers' memory
MAX_BOOT_BACKOFF = 10.0       # seconds, the longest wait between failed boots


class WorkerBootError(RuntimeError):
    """No worker could boot: raised by serve_forever() in the master."""


class PreforkMixIn:
    """Mix-in that runs a server as a master and pre-forked workers.

    Put it first: class S(PreforkMixIn, ThreadingMixIn, TCPServer).  Works
    over prefork's servers and over the standard library's (for example
    http.server.ThreadingHTTPServer).  Each setting is a class attribute,
    overridable per instance or as a keyword argument of the constructor.
    """

    workers = os.cpu_count() or 1
    graceful_timeout = 30.0     # a stopping worker is killed after this
    boot_timeout = 30.0         # a worker must be ready within this
    liveness_timeout = 30.0     # an idle worker's loop must turn within this
    request_timeout = None      # a request may run this long, then its worker is killed
    max_requests = 0            # recycle a worker after this many requests (0: never)
    max_requests_jitter = 0     # ... plus randint(0, jitter), so they do not all go at once
    max_worker_memory = None    # recycle a worker whose RSS passes this many bytes
    max_worker_age = None       # recycle a worker older than this many seconds
    boot_attempts = 5           # consecutive failed boots before giving up
    preload_app = False         # False: a reload re-imports the handler's module
    exclusive_accept = True     # wake one worker per connection (Linux EPOLLEXCLUSIVE)
    reuse_port = False          # a SO_REUSEPORT listener per worker (TCP only)
    proc_name = "prefork"
    request_queue_size = default_backlog()
    block_on_close = True       # server_close() waits for the workers to finish
    reuse_threads = True        # ThreadingMixIn workers keep their request threads,
    inline_quick_requests = True  # ... and run quick requests in the loop's thread

    SETTINGS = ("workers", "graceful_timeout", "boot_timeout", "liveness_timeout",
                "request_timeout", "max_requests", "max_requests_jitter",
                "max_worker_memory", "max_worker_age", "boot_attempts", "preload_app",
                "exclusive_accept", "reuse_port", "proc_name", "request_queue_size",
                "block_on_close", "reuse_threads", "inline_quick_requests")

    def __init__(self, *args, **kwargs):
        for name in self.SETTINGS:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
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
        self._worker = None            # this process's WorkerProcess, in a worker
        self._workers = {}             # pid -> WorkerInfo, in the master
        self._pending_signals = []
        self._generation = self._loaded_generation = 1
        self._stopping = None          # None, "graceful" or "quick"
        self._boot_failures = 0
        self._boot_error = None
        self._spawn_not_before = 0.0
        self._next_memory_check = 0.0
        self._scoreboard = None
        self._saved_handlers = {}
        self._poll_interval = 0.5
        self._unix_path = None         # a socket file this master bound, removed on close
        super().__init__(*args, **kwargs)
        if not hasattr(self, "_serve_loop"):  # a server class of the standard library
            self._serve_loop = ServeLoop()

    @property
    def current_worker(self):
        """In a worker, its WorkerInfo (number, pid, generation); None in the master."""
        return self._worker.info if self._worker is not None else None

    def server_bind(self):
        super().server_bind()
        if self.address_family == socket.AF_UNIX and isinstance(self.server_address, str):
            self._unix_path = self.server_address

    def server_activate(self):
        """Listen -- except with reuse_port, where each worker listens on its own."""
        if not self.reuse_port:
            super().server_activate()

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

    def worker_exit(self, worker):
        """In the worker, just before it exits."""

    def child_exit(self, worker):
        """In the master, once an exited worker has been reaped."""

    def on_reload(self):
        """In the master, on HUP, before the new generation is forked."""

    def nworkers_changed(self, new_value, old_value):
        """In the master, when TTIN/TTOU change the number of workers."""

    def on_exit(self):
        """In the master, once every worker has stopped."""

    # -- the serve loop, per role ---------------------------------------------

    def serve_forever(self, poll_interval=0.5):
        """In the master: supervise workers until shutdown() or a stop signal.

        Raises WorkerBootError if workers keep failing to boot.
        """
        self._poll_interval = poll_interval
        self._start_master()
        try:
            self._serve_loop.run(self, poll_interval)
        finally:
            if not self._stopping:  # the loop failed: do not leave workers behind
                self._begin_stop("quick")
            self._restore_signals(keep=(signal.SIGCHLD,))
        if self._boot_error:
            raise WorkerBootError(self._boot_error)

    def shutdown(self):
        """Stop gracefully, as TERM does; from another thread, wait for the loop."""
        if self._worker is not None:
            self._serve_loop.stop()  # a handler asking its own worker to stop
            return
        self._pending_signals.append(signal.SIGTERM)
        self._serve_loop.wake()
        self._serve_loop.wait_stopped()

    def service_actions(self):
        if self._worker is not None:
            self._worker.service_actions()
            super().service_actions()
            return
        self._dispatch_signals()
        if self._stopping:
            return
        self._reap_workers()
        self._check_workers()
        self._manage_workers()

    def _accepting_requests(self):
        if self._worker is None:
            return False  # the master never accepts
        accepting = getattr(super(), "_accepting_requests", None)
        return accepting() if accepting else True

    def process_request(self, request, client_address):
        worker = self._worker
        if worker is not None:
            worker.accepted += 1  # (the loop and the watcher of threads.py may race: >=)
            if worker.max_requests and worker.accepted >= worker.max_requests:
                worker.recycle()
        super().process_request(request, client_address)

    def finish_request(self, request, client_address):
        worker = self._worker
        if worker is None:
            return super().finish_request(request, client_address)
        if worker.in_request_child:
            # A ForkingMixIn child: bounded by an alarm instead of the scoreboard.
            if self.request_timeout:
                signal.alarm(math.ceil(self.request_timeout))
            return super().finish_request(request, client_address)
        token = worker.slot.request_begins()
        try:
            super().finish_request(request, client_address)
        finally:
            worker.slot.request_ends(token)

    def server_close(self):
        """Close the listener; in the master, wait for the workers (block_on_close)."""
        if self._worker is not None:
            return super().server_close()
        super().server_close()
        if self._workers and not self._stopping:
            self._begin_stop("graceful")
        if self.block_on_close:
            self._wait_for_workers()
        if self._unix_path:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None
        self._restore_signals()
        if self._scoreboard is not None and not self._workers:
            self._scoreboard.close()
            self._scoreboard = None
        if self._stopping:
            self.on_exit()

    def _close_in_worker(self):
        """The next class's server_close(): its threads or children, per block_on_close."""
        super().server_close()

    def _worker_max_requests(self):
        if not self.max_requests:
            return 0
        return self.max_requests + random.randint(0, self.max_requests_jitter)

    # -- the master -----------------------------------------------------------

    def _start_master(self):
        logfiles.configure_default_logging()
        self._master_pid = os.getpid()
        self._target = self.workers
        self._scoreboard = scoreboard.Scoreboard(max(64, 4 * self.workers))
        self._install_signals()
        set_title(self, "master")
        log.info("Starting prefork master (pid %d)", self._master_pid)
        log.info("Listening at: %s (%d)", format_address(self.server_address), self._master_pid)
        self.on_starting()
        self._manage_workers()
        self.when_ready()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            log.info("master not in the main thread: no signal handling")
            return
        for sig in MASTER_SIGNALS:
            self._saved_handlers[sig] = signal.signal(sig, self._record_signal)

    def _restore_signals(self, keep=()):
        for sig in list(self._saved_handlers):
            if sig not in keep:
                signal.signal(sig, self._saved_handlers.pop(sig))

    def _record_signal(self, signum, frame):
        """The master's signal handler: record, wake the loop, nothing more."""
        if signum != signal.SIGCHLD or signum not in self._pending_signals:
            self._pending_signals.append(signum)
        self._serve_loop.wake()

    def _dispatch_signals(self):
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            getattr(self, "handle_" + MASTER_SIGNALS[signum])()

    def handle_term(self):
        self._begin_stop("graceful")

    def handle_int(self):
        self._begin_stop("quick")

    handle_quit = handle_int

    def handle_hup(self):
        log.info("Reloading: starting generation %d", self._generation + 1)
        self.on_reload()
        self._generation += 1
        for worker in self._workers.values():
            if worker.retiring is None:
                worker.retiring = "reload"  # TERM once the new generation is ready
        self._manage_workers()

    def handle_ttin(self):
        self._set_target(self._target + 1)

    def handle_ttou(self):
        self._set_target(max(1, self._target - 1))

    def handle_usr1(self):
        logfiles.reopen()
        for worker in self._workers.values():
            self._signal(worker, signal.SIGUSR1)

    def handle_chld(self):
        """Nothing to do here: every turn reaps."""

    def _set_target(self, count):
        old, self._target = self._target, count
        if count != old:
            log.info("Number of workers: %d -> %d", old, count)
            self.nworkers_changed(count, old)
            self._manage_workers()

    def _begin_stop(self, mode):
        """Stop accepting everywhere; TERM (graceful) or QUIT (quick) the workers."""
        if self._stopping == "quick" or self._stopping == mode:
            return
        self._stopping = mode
        log.info("Stopping (%s)", mode)
        sig = signal.SIGTERM if mode == "graceful" else signal.SIGQUIT
        for worker in self._workers.values():
            self._signal(worker, sig)
        self._serve_loop.request_stop()

    def _signal(self, worker, sig):
        if sig in (signal.SIGTERM, signal.SIGQUIT):
            worker.signalled_at = worker.signalled_at or monotonic()
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _kill(self, worker, reason):
        log.error("Killing worker %d (pid %d): %s", worker.number, worker.pid, reason)
        worker.killed_for = reason
        self._signal(worker, signal.SIGKILL)

    # reaping

    def _reap_workers(self):
        """Collect every exited worker of ours (never anyone else's children)."""
        for pid, worker in list(self._workers.items()):
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped, status = pid, 0
            if reaped:
                self._worker_exited(worker, status)

    def _worker_exited(self, worker, status):
        del self._workers[worker.pid]
        slot = self._scoreboard.slots[worker.slot_index]
        how = _describe_exit(status)
        never_booted = slot.state == scoreboard.BOOTING
        if worker.killed_for:
            log.warning("Worker %d (pid %d) %s", worker.number, worker.pid, how)
            if never_booted:
                self._boot_failed(worker, worker.killed_for)
        elif never_booted and not self._stopping and worker.retiring is None:
            self._boot_failed(worker, slot.error.decode("utf-8", "replace") or how)
        elif worker.retiring or self._stopping or status == 0:
            log.info("Worker %d (pid %d) %s", worker.number, worker.pid, how)
        else:
            log.error("Worker %d (pid %d) %s unexpectedly", worker.number, worker.pid, how)
        self._scoreboard.release(worker.slot_index)
        self.child_exit(worker)

    def _boot_failed(self, worker, error):
        """Back off; after boot_attempts in a row, give up -- the reload, or the master."""
        self._boot_failures += 1
        if self._boot_failures == 1:
            log.error("Worker %d (pid %d) failed to boot: %s", worker.number, worker.pid, error)
        else:
            log.warning("Worker %d failed to boot again (%d of %d attempts)",
                        worker.number, self._boot_failures, self.boot_attempts)
        if self._boot_failures < self.boot_attempts:
            delay = min(0.1 * 2 ** (self._boot_failures - 1), MAX_BOOT_BACKOFF)
            self._spawn_not_before = monotonic() + delay
            return
        self._boot_failures = 0
        if any(w.retiring == "reload" and w.signalled_at is None for w in self._workers.values()):
            self._abort_reload(error)
        elif not any(self._ready(w) for w in self._workers.values()):
            self._boot_error = (f"worker failed to boot {self.boot_attempts} times "
                                f"in a row: {error}")
            log.error("Giving up: %s", self._boot_error)
            self._begin_stop("quick")
        else:
            self._spawn_not_before = monotonic() + MAX_BOOT_BACKOFF

    def _abort_reload(self, error):
        """The new generation cannot boot: keep the old one serving, as nginx does."""
        for worker in list(self._workers.values()):
            if worker.retiring == "reload":
                worker.retiring = None
            elif worker.generation == self._generation and not self._ready(worker):
                self._kill(worker, "its generation failed to boot")
        self._generation = max(w.generation for w in self._workers.values()
                               if not w.killed_for)
        log.error("Reload failed, keeping generation %d: %s", self._generation, error)

    # health

    def _ready(self, worker):
        return self._scoreboard.slots[worker.slot_index].state not in (
            scoreboard.FREE, scoreboard.BOOTING)

    def _check_workers(self):
        """Enforce the scoreboard's timeouts and the recycling limits."""
        now = monotonic()
        check_memory = self.max_worker_memory and now >= self._next_memory_check
        if check_memory:
            self._next_memory_check = now + MEMORY_CHECK_INTERVAL
        for worker in list(self._workers.values()):
            if worker.killed_for:
                continue
            slot = self._scoreboard.slots[worker.slot_index]
            state = slot.state
            if state == scoreboard.BOOTING:
                if now - worker.born > self.boot_timeout:
                    self._kill(worker, f"did not boot within {self.boot_timeout}s")
                continue
            if not worker.ready:
                worker.ready = True
                self._boot_failures = 0  # a worker booted: any crash loop is over
            if state == scoreboard.STOPPING and worker.retiring is None:
                worker.retiring = "stopping on its own"  # e.g. max_requests
                worker.signalled_at = now
            if worker.signalled_at and now - worker.signalled_at > self.graceful_timeout:
                self._kill(worker, f"still running {self.graceful_timeout}s after being asked to stop")
            elif state == scoreboard.IDLE and now - slot.heartbeat > self.liveness_timeout:
                self._kill(worker, f"no heartbeat for {now - slot.heartbeat:.1f}s")
            elif (self.request_timeout and slot.request_started
                    and now - slot.request_started > self.request_timeout):
                self._kill(worker, f"a request ran {now - slot.request_started:.1f}s, "
                                   f"past request_timeout ({self.request_timeout}s)")
            elif worker.retiring is None:
                if self.max_worker_age and now - worker.born > self.max_worker_age:
                    self._retire(worker, f"older than max_worker_age ({self.max_worker_age}s)")
                elif check_memory:
                    self._check_memory(worker)

    def _check_memory(self, worker):
        import psutil  # only with max_worker_memory: 2 MiB that every worker would carry

        try:
            rss = psutil.Process(worker.pid).memory_info().rss
        except psutil.Error:
            return
        if rss > self.max_worker_memory:
            self._retire(worker, f"RSS {rss >> 20} MiB, past max_worker_memory "
                                 f"({self.max_worker_memory >> 20} MiB)")

    def _retire(self, worker, reason, at_once=False):
        """Replace a worker: TERM it once its replacement is ready (or now)."""
        log.info("Retiring worker %d (pid %d): %s", worker.number, worker.pid, reason)
        worker.retiring = reason
        if at_once:
            self._signal(worker, signal.SIGTERM)

    # the pool

    def _manage_workers(self):
        """Keep self._target workers of the current generation; retire the rest."""
        if self._stopping:
            return
        live = sorted((w for w in self._workers.values() if w.retiring is None),
                      key=lambda w: w.born)
        for worker in live[:max(0, len(live) - self._target)]:
            self._retire(worker, "fewer workers wanted", at_once=True)
        live = live[max(0, len(live) - self._target):]
        booting = sum(not self._ready(w) for w in live)
        while (len(live) < self._target and monotonic() >= self._spawn_not_before
               and not (self._boot_failures and booting)):
            worker = self._spawn_worker()
            if worker is None:
                break
            live.append(worker)
            booting += 1
        if len(live) >= self._target and all(self._ready(w) for w in live):
            for worker in list(self._workers.values()):
                if worker.retiring and worker.signalled_at is None:
                    self._signal(worker, signal.SIGTERM)

    def _spawn_worker(self):
        index = self._scoreboard.claim(self._generation)
        if index is None:
            log.error("No free scoreboard slot (%d): not forking", self._scoreboard.capacity)
            return None
        worker = WorkerInfo(index + 1, self._generation, monotonic())
        self.pre_fork(worker)
        # Keep the garbage collectors of workers off the master's objects, so
        # that those pages stay shared instead of being copied in each worker.
        gc.collect()
        gc.freeze()
        # Signals wait until the child has its own handlers: a TERM sent to a
        # worker just forked must not reach the master's handler in it.
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        pid = os.fork()
        if pid == 0:
            try:
                self._pending_signals.clear()
                WorkerProcess(self, worker, self._master_pid).run(self._scoreboard.slots)
            finally:
                os._exit(1)  # run() never returns; never fall back into the master's loop
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        worker.pid = pid
        self._workers[pid] = worker
        return worker

    def _wait_for_workers(self):
        """Reap every worker; SIGKILL those still running after graceful_timeout.

        SIGCHLD (still handled after the loop) wakes the wait at each exit.
        """
        waker = self._serve_loop.waker
        while True:
            self._reap_workers()
            if not self._workers:
                return
            now = monotonic()
            deadline = self.graceful_timeout + min(
                w.signalled_at or now for w in self._workers.values())
            if now >= deadline:
                for worker in list(self._workers.values()):
                    if not worker.killed_for:
                        self._kill(worker, f"did not stop within {self.graceful_timeout}s")
                for pid, worker in list(self._workers.items()):
                    _, status = os.waitpid(pid, 0)
                    self._worker_exited(worker, status)
                return
            if select.select([waker], [], [], min(deadline - now, self._poll_interval))[0]:
                waker.drain()


def _default_of_the_framework(cls, name):
    """Whether cls gets attribute `name` from socketserver itself (prefork's or the
    stdlib's), rather than from a class of the application."""
    owner = next(c for c in cls.__mro__ if name in vars(c))
    return owner.__module__ in ("prefork.server", "socketserver")


def _describe_exit(status):
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
