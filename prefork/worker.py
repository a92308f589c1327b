"""The worker role: one worker process, from fork to os._exit().

A worker inherits the master's fully built server object.  It boots (signals,
its own process group, process title, hooks, its user and group, the
application's code (load_app), its listeners), marks its scoreboard slot ready, runs the server's
ordinary serve loop on the inherited listener, and leaves when told to,
finishing its requests first.

Signals, in the worker: TERM stops gracefully -- no new requests; open
connections are told (see connections.py); the requests in flight finish,
per block_on_close; ForkingMixIn request children are passed the TERM.  INT
and QUIT stop at once.  USR1 reopens log files.  The master's own signals
(HUP, TTIN, TTOU; USR2, kept for a binary upgrade) are ignored.
"""

import functools
import gc
import logging
import os
import random
import signal
import socket
import sys
import threading
from time import monotonic

from . import logfiles
from .apps import fresh_import
from .connections import OpenConnections, StopEvent
from .listeners import reuse_port_listener, share_listener
from .proctitle import set_title
from .scoreboard import SlotState

log = logging.getLogger("prefork")

# The signals a worker handles (install_signals).
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BOOT_ERROR = 3  # as gunicorn's
PARENT_CHECK_INTERVAL = 0.5  # seconds between checks that the master is alive
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class WorkerInfo:
    """A worker as the hooks see it.

    number: its position (scoreboard slot + 1), shown in its process title.
    generation: 1, then one more for each reload.  pid: set once forked.
    born: time.monotonic() when it was forked.
    """

    def __init__(self, number, generation, born):
        self.number = number
        self.generation = generation
        self.born = born
        self.pid = None

    def __repr__(self):
        return f"<worker {self.number} pid={self.pid} gen={self.generation}>"


class Worker:
    """The role of a worker process: PreforkMixIn hands it its overrides.

    Made by Master.spawn(), run in the forked child: run() never returns.  framework is
    the server as the class after PreforkMixIn sees it (super()).
    """

    def __init__(self, server, framework, info, scoreboard, master_pid, poll_interval,
                 foreign_sockets=()):
        self.server = server
        self.foreign_sockets = foreign_sockets  # the master's, not this worker's
        self.poll_interval = poll_interval
        self.framework = framework
        self.info = info
        self.master_pid = master_pid
        self.scoreboard = scoreboard
        self.slot = None
        self.stopping = None           # a StopEvent, made at boot (in the worker)
        self.stop_not_begun = [True]   # popped by the one begin_stop() that runs
        self.connections = None        # OpenConnections, made at boot
        self.in_request_child = False  # True in a ForkingMixIn child of this worker
        self.next_parent_check = 0.0
        self.accepted = 0
        self.max_requests = 0
        self.statm = None              # /proc/self/statm, with max_worker_memory
        self.reopen_requested = False

    # -- boot ---------------------------------------------------------------

    def run(self):
        """Boot, serve, exit.  Never returns."""
        try:
            self.boot()
        except BaseException as error:  # any failure to boot is reported the same way
            self.report_boot_error(error)
            os._exit(EXIT_BOOT_ERROR)
        status = EXIT_OK
        try:
            self.serve()
        except SystemExit as stop:  # a sync worker's handler called sys.exit()
            status = stop.code if isinstance(stop.code, int) else EXIT_OK
        except BaseException:
            log.exception("worker %s crashed", self.info.number)
            status = EXIT_ERROR
        self.exit(status)

    def boot(self):
        server, info = self.server, self.info
        info.pid = os.getpid()
        self.stopping = StopEvent()
        self.connections = OpenConnections(self.stopping)
        self.install_signals()
        os.setpgid(0, 0)  # a group of its own: the master can end it with its request children
        set_title(server, f"worker {info.number} [gen {info.generation}]")
        self.slot = self.scoreboard.writer(info.number - 1, threaded=_is_threading(server))
        os.register_at_fork(after_in_child=self.entered_request_child)
        server._role = self  # from here on, PreforkMixIn's methods act as this worker
        for sock in self.foreign_sockets:
            sock.close()
        server.post_fork(info)
        if server._identity is not None:
            server._identity.drop()
        if not server.preload_app:
            server.load_app(info)
        server.RequestHandlerClass = self.connections.tracking(server.RequestHandlerClass)
        if server.reuse_port:
            server.socket.close()
            server.socket = reuse_port_listener(server)
            server.listeners = [server.socket]
        else:
            share_listener(server)
        if server.max_requests:
            self.max_requests = server.max_requests + random.randint(0, server.max_requests_jitter)
        if server.max_worker_memory:
            self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        server.post_worker_init(info)
        if not _is_forking(server):  # (a thread would make each request's fork unsafe)
            self.start_busy_heartbeat()
        self.slot.booted(info.pid)
        log.info("Booted worker %d (pid %d, generation %d)", info.number, info.pid, info.generation)

    def reload_handler(self):
        """Import the handler's module afresh, so that a reload runs new code."""
        handler = self.server.RequestHandlerClass
        module = sys.modules.get(getattr(handler, "__module__", None))
        if module is None or module.__name__ == "__main__" or not isinstance(handler, type):
            return  # defined in the script itself (the master said so at start), or no class
        module = fresh_import(module)
        self.server.RequestHandlerClass = functools.reduce(
            getattr, handler.__qualname__.split("."), module)  # (a class in a class, too)

    def report_boot_error(self, error):
        """Leave the error on the scoreboard for the master (which logs it)."""
        if self.slot is not None:
            self.slot.failed_to_boot(logfiles.describe_error(error))
        log.debug("worker %s failed to boot", self.info.number, exc_info=error)

    def install_signals(self):
        handlers = {  # (HANDLED_SIGNALS: those with a handler of ours)
            signal.SIGTERM: self.on_term,
            signal.SIGINT: self.on_quick_stop, signal.SIGQUIT: self.on_quick_stop,
            signal.SIGUSR1: self.on_usr1,
            signal.SIGCHLD: signal.SIG_DFL,
            # the master's own
            signal.SIGHUP: signal.SIG_IGN, signal.SIGTTIN: signal.SIG_IGN,
            signal.SIGTTOU: signal.SIG_IGN, signal.SIGUSR2: signal.SIG_IGN,
        }
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        # The master blocked them around the fork: any that came meanwhile arrive now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handlers)

    def start_busy_heartbeat(self):
        """While the loop's thread runs a request its loop does not turn: beat for
        it, so that the master tells a long request from a stopped or wedged
        process (one that cannot run this thread) -- see liveness_timeout.  It
        beats as often as the loop would (poll_interval, set for liveness)."""

        def beat():
            # The worker's signals go to its main thread: a TERM the kernel
            # handed this thread would not interrupt the main thread's sleep
            # or read in a request, and would wait for the request to end.
            signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
            while not self.stopping.wait(self.poll_interval):
                self.slot.busy_heartbeat(monotonic())

        threading.Thread(target=beat, name="prefork-heartbeat", daemon=True).start()

    # -- signal handlers ----------------------------------------------------

    def on_term(self, signum, frame):
        self.begin_stop("asked to stop")

    def on_quick_stop(self, signum, frame):
        """Stop now: no request finishes (its client sees the connection close)."""
        if not self.in_request_child:
            self.signal_request_children(signal.SIGKILL)
        self.exit(EXIT_OK)

    def on_usr1(self, signum, frame):
        self.reopen_requested = True
        self.server._serve_loop.wake()

    # -- stopping -----------------------------------------------------------

    def begin_stop(self, why):
        """Graceful stop: take no new request, tell open connections, let
        those in flight finish.  Safe in a signal handler; runs once."""
        try:
            self.stop_not_begun.pop()  # one atomic step: a TERM and a recycling
        except IndexError:             # request thread may both get here
            return
        self.stopping.set()
        if self.in_request_child:  # its worker passed the TERM on
            self.connections.stop()
            return
        log.info("Worker %d (pid %d) stopping: %s", self.info.number, self.info.pid, why)
        self.server._serve_loop.request_stop()
        if self.slot is not None and self.slot.server_stops():  # (not a reload's)
            self.server._serve_loop.when_wakeups_taken(self.close_listeners)
        self.connections.stop()
        self.signal_request_children(signal.SIGTERM)
        self.server.worker_stopping(self.info)

    def close_listeners(self):
        """Close this process's copies of the stream listeners, taking no more
        connections: when the whole server stops, once every process has (the
        master too), a new connection is refused -- a balancer retries it
        elsewhere -- rather than queued until the last of them exits, then
        reset.  Not on a reload: the new workers take the connections.  In a
        stop, through ServeLoop.when_wakeups_taken: a connection the kernel
        woke this worker alone for (EPOLLEXCLUSIVE) is taken first -- a new
        master's workers (USR2) share the listeners, and would never be woken
        for it.  Datagram sockets stay open: the requests in flight answer on them."""
        if self.server.socket_type == socket.SOCK_STREAM:
            for sock in self.server.listeners:
                sock.close()

    def exit(self, status):
        """Run the worker_exit hook, flush the logs, leave (no clean-up of the
        master's objects: they are the master's)."""
        try:
            if not self.in_request_child:
                self.server.worker_exit(self.info)
        finally:
            logging.shutdown()
            os._exit(status)

    # -- serving (PreforkMixIn's overrides, in a worker) -----------------------

    def serve(self):
        server = self.server
        server._serve_loop.run(server, self.poll_interval,
                               wake_one=server.exclusive_accept and not server.reuse_port)
        self.slot.set_state(SlotState.STOPPING)
        # Without block_on_close, server_close() does not join the request threads,
        # but the interpreter would still wait for non-daemon ones before exiting:
        # so does the worker, whose os._exit() would otherwise kill them mid-request.
        if server.block_on_close or not getattr(server, "daemon_threads", True):
            self.slot.wait_for_requests()
        self.framework.server_close()

    def serve_forever(self, poll_interval):
        raise RuntimeError("serve_forever() is the master's: a worker is already serving")

    def shutdown(self):
        """A handler asking its own worker to stop: gracefully, without waiting."""
        self.begin_stop("shutdown() called")

    def accepting_requests(self):
        accepting = getattr(self.framework, "_accepting_requests", None)
        return accepting() if accepting else True

    def next_turn_in(self):
        next_turn_in = getattr(self.framework, "_next_turn_in", None)
        return next_turn_in() if next_turn_in else None

    def process_request(self, request, client_address):
        self.accepted += 1  # (the loop and the watcher of threads.py may race: >=)
        if self.max_requests and self.accepted >= self.max_requests:
            self.recycle(f"max_requests ({self.max_requests}) reached")
        self.framework.process_request(request, client_address)

    def finish_request(self, request, client_address):
        if self.in_request_child:
            # A ForkingMixIn child: bounded by an alarm instead of the scoreboard.
            self.arm_request_alarm(client_address)
            return self.framework.finish_request(request, client_address)
        token = self.slot.request_begins()
        try:
            self.framework.finish_request(request, client_address)
        finally:
            self.slot.request_ends(token)
            if self.statm is not None:
                self.check_memory()

    def service_actions(self):
        """Every turn of the worker's loop: heartbeat, and the checks that stop it."""
        now = monotonic()
        self.slot.heartbeat(now)
        if self.reopen_requested:
            self.reopen_requested = False
            logfiles.reopen()
        if now >= self.next_parent_check:
            self.next_parent_check = now + PARENT_CHECK_INTERVAL
            if os.getppid() != self.master_pid:
                self.begin_stop(f"master {self.master_pid} is gone")
        self.framework.service_actions()

    def server_close(self):
        self.framework.server_close()

    # -- recycling and request children -----------------------------------------

    def recycle(self, why):
        """A limit reached: stop after the requests in flight; the master replaces us."""
        self.begin_stop(f"recycling: {why}")

    def check_memory(self):
        """After each request, as uWSGI's reload-on-rss: one pread of statm."""
        rss = int(os.pread(self.statm, 64, 0).split()[1]) * PAGE_SIZE
        if rss > self.server.max_worker_memory:
            self.recycle(f"RSS {rss >> 20} MiB, past max_worker_memory "
                         f"({self.server.max_worker_memory >> 20} MiB)")

    def signal_request_children(self, sig):
        """Pass a stop on to this worker's ForkingMixIn children (pids it forked)."""
        for pid in getattr(self.server, "active_children", None) or ():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def entered_request_child(self):
        """After a fork in this worker (ForkingMixIn): the child serves one
        request, leaves the slot alone, and hears only its own connection."""
        self.in_request_child = True
        self.stop_not_begun = [True]  # its own stop: when its worker passes the TERM on
        self.close_listeners()
        self.connections.forked()

    def arm_request_alarm(self, client_address):
        timeout = self.server.request_timeout
        if not timeout:
            return

        def expired(signum, frame):
            log.error("Worker %d: a request child (pid %d) ran past request_timeout (%ss): "
                      "ending it", self.info.number, os.getpid(), timeout)
            logging.shutdown()
            os._exit(EXIT_ERROR)

        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, timeout)


def fork_worker(worker, master_signals):
    """Fork; in the child, run worker (never returning); return the child's pid.

    The master's signals are blocked across the fork until the child has its
    own handlers: a TERM sent to a worker just forked must not reach the
    master's handler in it.
    """
    # Keep the garbage collectors of workers off the master's objects, so
    # that those pages stay shared instead of being copied in each worker.
    gc.collect()
    gc.freeze()
    signal.pthread_sigmask(signal.SIG_BLOCK, master_signals)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                worker.run()
            finally:
                os._exit(1)  # run() never returns; never fall back into the master's loop
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, master_signals)  # (in the master)
    return pid


def _is_threading(server):
    return hasattr(server, "process_request_thread")  # either ThreadingMixIn


def _is_forking(server):
    return hasattr(server, "active_children")  # either ForkingMixIn
