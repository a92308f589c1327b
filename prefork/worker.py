"""The life of one worker process, from fork to os._exit().

A worker inherits the master's fully built server object.  It boots (signals,
process title, hooks, a fresh handler module after a reload, its listener),
marks its scoreboard slot ready, runs the ordinary serve loop on the
inherited listener, and leaves when told to, finishing its requests first.

Signals, in the worker: TERM stops gracefully (no new requests; the ones in
flight finish, per block_on_close); INT and QUIT stop at once; USR1 reopens
log files; the master's own signals (HUP, TTIN, TTOU, USR2) are ignored.
"""

import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from time import monotonic

from . import logfiles, scoreboard
from .listeners import reuse_port_listener, share_listener
from .loop import ServeLoop
from .proctitle import set_title

log = logging.getLogger("prefork")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BOOT_ERROR = 3  # as gunicorn's: the master stops retrying after a few
PARENT_CHECK_INTERVAL = 0.5  # seconds between checks that the master is alive


class WorkerInfo:
    """What the master and the hooks know of a worker.

    number: its stable position (slot + 1), shown in its process title.
    generation: bumped by each reload.  pid: set once forked.
    """

    def __init__(self, number, generation, born):
        self.number = number
        self.generation = generation
        self.born = born
        self.pid = None
        self.ready = False       # seen booted by the master
        self.retiring = None     # why the master wants it gone, once it does
        self.signalled_at = None  # when it was sent TERM/QUIT
        self.killed_for = None   # why the master killed it

    @property
    def slot_index(self):
        return self.number - 1

    def __repr__(self):
        return f"<worker {self.number} pid={self.pid} gen={self.generation}>"


class WorkerProcess:
    """The worker's own state, attached to the server in the forked child."""

    def __init__(self, server, info, master_pid):
        server._worker = self  # from now on, every PreforkMixIn method acts as a worker
        self.server = server
        self.info = info
        self.master_pid = master_pid
        self.pid = info.pid = os.getpid()
        self.slot = None
        self.in_request_child = False  # True in a ForkingMixIn child of this worker
        self.next_parent_check = 0.0
        self.loop = ServeLoop(wake_one=server.exclusive_accept and not server.reuse_port)
        server._serve_loop = self.loop  # shutdown() and max_threads wake this process's loop
        self.accepted = 0
        self.max_requests = server._worker_max_requests()
        self.reopen_requested = False

    # -- boot ---------------------------------------------------------------

    def run(self, scoreboard_slots):
        """Boot, serve, exit.  Never returns."""
        try:
            self.boot(scoreboard_slots)
        except BaseException as error:  # any failure to boot is reported the same way
            self.report_boot_error(error)
            os._exit(EXIT_BOOT_ERROR)
        status = EXIT_OK
        try:
            self.serve()
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else EXIT_OK
        except BaseException:
            log.exception("worker %s crashed", self.info.number)
            status = EXIT_ERROR
        finally:
            try:
                self.server.worker_exit(self.info)
            finally:
                logging.shutdown()
                os._exit(status)

    def boot(self, slots):
        server, info = self.server, self.info
        self.install_signals()
        set_title(server, f"worker {info.number} [gen {info.generation}]")
        threaded = hasattr(server, "process_request_thread")  # either ThreadingMixIn
        if threaded:
            self.slot = scoreboard.ThreadedSlotWriter(slots[info.slot_index], threading.get_ident())
        else:
            self.slot = scoreboard.SlotWriter(slots[info.slot_index])
        self.slot.slot.pid = self.pid
        os.register_at_fork(after_in_child=self.entered_request_child)
        server.post_fork(info)
        if info.generation > server._loaded_generation and not server.preload_app:
            self.reload_handler()
        if server.reuse_port:
            server.socket.close()
            server.socket = reuse_port_listener(server)
        else:
            share_listener(server)
        server.post_worker_init(info)
        self.slot.set_state(scoreboard.IDLE)
        log.info("Booted worker %d (pid %d, generation %d)", info.number, self.pid, info.generation)

    def reload_handler(self):
        """Import the handler's module afresh, so that a reload runs new code."""
        handler = self.server.RequestHandlerClass
        module = sys.modules.get(handler.__module__)
        if module is None or handler.__module__ == "__main__":
            return  # defined in the script itself: nothing to re-import
        importlib.invalidate_caches()
        module = importlib.reload(module)
        self.server.RequestHandlerClass = getattr(module, handler.__qualname__)

    def report_boot_error(self, error):
        """Leave the error on the scoreboard for the master, and in the log."""
        lines = traceback.format_exception_only(type(error), error)
        text = lines[-1].strip()
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            where = frames[-1]
            text = f"{text} ({where.filename}, line {where.lineno})"
        if self.slot is not None:
            self.slot.slot.set_error(text)
        log.debug("worker %s failed to boot", self.info.number, exc_info=error)

    def install_signals(self):
        handlers = {
            signal.SIGTERM: self.on_graceful_stop,
            signal.SIGINT: self.on_quick_stop, signal.SIGQUIT: self.on_quick_stop,
            signal.SIGUSR1: self.on_reopen,
            signal.SIGCHLD: signal.SIG_DFL,
            # the master's own
            signal.SIGHUP: signal.SIG_IGN, signal.SIGTTIN: signal.SIG_IGN,
            signal.SIGTTOU: signal.SIG_IGN, signal.SIGUSR2: signal.SIG_IGN,
        }
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        # The master blocked them around the fork: any that came meanwhile arrive now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handlers)

    # -- signal handlers: record, wake ----------------------------------------

    def on_graceful_stop(self, signum, frame):
        self.loop.request_stop()

    def on_quick_stop(self, signum, frame):
        raise SystemExit(EXIT_OK)

    def on_reopen(self, signum, frame):
        self.reopen_requested = True
        self.loop.wake()

    # -- serving ------------------------------------------------------------

    def serve(self):
        server = self.server
        self.loop.run(server, server._poll_interval)
        self.slot.set_state(scoreboard.STOPPING)
        # Without block_on_close, server_close() does not join the request threads,
        # but the interpreter would still wait for non-daemon ones before exiting:
        # so does the worker, whose os._exit() would otherwise kill them mid-request.
        if server.block_on_close or not getattr(server, "daemon_threads", True):
            self.slot.wait_for_requests()
        server._close_in_worker()

    def entered_request_child(self):
        """After a fork in this worker (ForkingMixIn): the child leaves the slot alone."""
        self.in_request_child = True

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
                log.warning("worker %s: master %s is gone, stopping",
                            self.info.number, self.master_pid)
                self.loop.request_stop()

    def recycle(self):
        """max_requests reached: stop after the requests in flight; the master replaces us."""
        if self.loop.serving:
            log.info("worker %s: max_requests (%d) reached, recycling",
                     self.info.number, self.max_requests)
            self.loop.request_stop()
