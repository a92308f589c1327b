"""The master role: fork the workers and supervise them, in one loop.

The server's constructor has bound and listened, as socketserver does.
serve_forever() then runs the server's serve loop in the master -- which
never accepts -- and each turn (service_actions) is nginx's cycle:

    reap       collect exited workers
    watch      read each worker's slot once: its lifecycle, timeouts, limits
    dispatch   the commands that signal handlers recorded (handle_<name>)
    keep       the wanted number of workers of the current generation; once
               they all serve, the retired ones (an old generation) leave

Signal handlers only record a command and wake the loop; the control
socket's commands (control.py) enter the same queue and run the same
handle_<name> methods.

Signals to the master:
  TERM        graceful stop: workers finish their requests (graceful_timeout) --
              after drain_delay, while the health listener answers 503
  INT, QUIT   quick stop -- also during a graceful stop, which they cut short
  HUP         reload: a new generation of workers; the old one is retired once
              the new one serves (its handler module re-imported unless preload_app)
  TTIN, TTOU  one worker more (up to max_workers), one fewer (down to 1; spare
              scaling, if on, resizes the pool again within a second)
  USR1        reopen log files, in the master and every worker
  USR2        binary upgrade: a new master on the same sockets (upgrade.py)
  CHLD        a worker exited: reaped on the next turn
During a stop, HUP, TTIN, TTOU, USR2, `workers N` and a second TERM are
logged and ignored.

After server_close(), exit_status says how the stop went (ExitStatus).

The longest module, on purpose: the master's whole cycle --
commands, stop, watching, reload, pool -- reads top to bottom in one place,
as nginx's does.  What stands on its own is beside it: commands.py (the
queue), pool.py (what is known of each worker, and its timeouts), worker.py
(the fork and the worker's life).
"""

import enum
import logging
import os
import signal
from time import monotonic

from . import logfiles
from .commands import SIGNALS, CommandQueue
from .connections import StopEvent
from .channel import Channel
from .control import ControlServer
from .health import HealthServer
from .listeners import format_address
from .pool import Lifecycle, Pool, Retire, WorkerRecord
from .proctitle import set_title
from .scoreboard import Scoreboard
from .status import RequestTally, master_status
from .systemd import Notifier
from .upgrade import Upgrade
from .worker import Worker, WorkerInfo, fork_worker

log = logging.getLogger("prefork")

MAX_BOOT_BACKOFF = 10.0  # seconds, the longest wait between failed boots
SCALING_INTERVAL = 1.0   # seconds between two decisions of spare scaling


class StopMode(enum.Enum):
    GRACEFUL = "graceful"  # workers finish their requests
    QUICK = "quick"        # workers leave at once


class ExitStatus(enum.IntEnum):
    """How the master's stop went: server.exit_status, for the process's exit code."""

    OK = 0          # every worker stopped by itself
    KILLED = 1      # some worker had to be SIGKILLed when graceful_timeout ran out
    BOOT_ERROR = 3  # workers could not boot (serve_forever() raised WorkerBootError)


class WorkerBootError(RuntimeError):
    """No worker could boot: raised by serve_forever() in the master."""


class Master:
    """The role of the master process: PreforkMixIn hands it its overrides.

    server is the PreforkMixIn server; framework, the same server as the
    class after PreforkMixIn sees it (super()).  The number of workers
    wanted is server.workers, which TTIN and TTOU change.
    """

    info = None  # (a worker's role says which worker it is)

    def __init__(self, server, framework):
        self.server = server
        self.framework = framework
        self.pool = Pool()
        self.commands = CommandQueue(wake=lambda: server._serve_loop.wake())
        self.stopping = StopEvent()
        self.stop_mode = None
        self.exit_status = ExitStatus.OK
        self.generation = 1
        self.reloading_from = None    # during a reload: the generation to fall back to
        self.boot_failures = 0        # in a row
        self.spawn_not_before = 0.0   # back-off after a failed boot
        self.boot_error = None
        self.scoreboard = None
        self.poll_interval = 0.5
        self.pid = None
        self.waiting_for_room = False
        self.listeners_before_reload = None  # while a reload changes the listeners
        self.control = None                  # a Channel to the ControlServer, with control_socket
        self.health_channel = None           # a Channel to the HealthServer, with health_bind
        self.drain_until = None              # a graceful stop's drain_delay: when it ends
        self.tally = RequestTally()
        self.started = None                  # monotonic(), at start
        self.upgrade = None                  # after USR2: the new master's Upgrade
        self.next_scaling = 0.0              # with spare scaling (server.scaler)
        self.notifier = Notifier()           # systemd's, at start
        self.announced_ready = False
        self.next_watchdog = 0.0

    # -- PreforkMixIn's overrides, in the master ---------------------------------

    def serve_forever(self, poll_interval):
        self.start(poll_interval)
        if self.notifier.watchdog_interval:  # the loop turns at least that often
            poll_interval = min(poll_interval, self.notifier.watchdog_interval)
        try:
            self.server._serve_loop.run(self.server, poll_interval)
        finally:
            if self.stop_mode is None:  # the loop failed: leave no worker behind
                self.begin_stop(StopMode.QUICK)
        if self.boot_error:
            raise WorkerBootError(self.boot_error)

    def shutdown(self):
        """Stop gracefully, as TERM does; from another thread, wait for the loop."""
        self.commands.record("term")
        self.server._serve_loop.wait_stopped()

    def service_actions(self):
        if self.notifier.watchdog_interval and monotonic() >= self.next_watchdog:
            self.next_watchdog = monotonic() + self.notifier.watchdog_interval
            self.notifier.watchdog()  # the loop turns: supervision is alive
        self.reap()
        self.watch_workers()  # first: commands act on what the workers are now
        for channel in self.channels():
            channel.expire()
        self.commands.dispatch(self)
        if self.drain_until is not None and monotonic() >= self.drain_until:
            log.info("Drained: stopping the workers")
            self.stop_workers()
        if self.stop_mode:
            return
        if self.server.scaler and monotonic() >= self.next_scaling:
            self.scale()
        self.keep_pool()

    def accepting_requests(self):
        return False  # the master never accepts: its workers do

    def next_turn_in(self):
        if self.drain_until is None:
            return None
        return self.drain_until - monotonic()

    def process_request(self, request, client_address):
        self.framework.process_request(request, client_address)  # handle_request() in the master

    def finish_request(self, request, client_address):
        self.framework.finish_request(request, client_address)

    def server_close(self):
        """Close the listener; with block_on_close, wait for every worker first."""
        if len(self.pool) and self.stop_mode is None:
            self.begin_stop(StopMode.GRACEFUL, drain=False)
        if self.drain_until is not None:  # (the loop has gone: no more draining)
            self.stop_workers()
        if self.server.block_on_close:
            self.wait_for_workers()
        handed_over = self.handing_over()  # (a new master gone gives the files back)
        if self.control:
            self.control.close()
            if not handed_over:  # (else the file is the new master's)
                _unlink(self.server.control_socket)
            self.control = None
        self.close_health()
        self.framework.server_close()
        self.close_listeners()
        self.commands.restore_signals()
        if self.scoreboard is not None and not len(self.pool):
            self.scoreboard.close()
            self.scoreboard = None
        if self.stop_mode and not len(self.pool):
            self.server.on_exit()
        self.stopping.close()
        self.notifier.close()
        if handed_over:  # the new master serves on the same socket files
            log.info("Upgrade: handed over to the new master (pid %d)", self.upgrade.pid)
            self.upgrade.handed_over()
        else:
            for path in self.server._unix_paths:
                _unlink(path)
        self.server._unix_paths.clear()

    # -- start ----------------------------------------------------------------

    def start(self, poll_interval):
        server = self.server
        if self.pid is not None:
            raise RuntimeError("a prefork server's serve_forever() runs once: make a new server")
        logfiles.configure_default_logging()
        self.pid = os.getpid()
        self.started = monotonic()
        self.tally.start(self.started)
        self.notifier = Notifier.from_environment()
        self.poll_interval = poll_interval
        # Two generations side by side during a reload, at the most workers.
        self.scoreboard = Scoreboard(2 * server.max_workers)
        server._serve_loop.waker  # made now: a signal during the first forks wakes the loop
        self.commands.install_signals()
        set_title(server, "master")
        log.info("Starting prefork master (pid %d)", self.pid)
        for listener in server.listeners:
            log.info("Listening at: %s (%d)", format_address(listener.getsockname()), self.pid)
        if server._removed_stale_socket:  # (at construction, before logging was set up)
            log.info("Removed stale socket file %s", server._removed_stale_socket)
        self.warn_if_not_reloadable()
        if server.scaler:
            log.info("%s", server.scaler.describe())
        if server.control_socket:
            self.control = Channel(ControlServer(server.control_socket, self),
                                   server._serve_loop)
            log.info("Control socket: %s", server.control_socket)
        if server.health_bind:
            self.open_health()
        server.on_starting()
        self.keep_pool()
        server.when_ready()

    def warn_if_not_reloadable(self):
        handler = self.server.RequestHandlerClass
        if getattr(handler, "__module__", None) == "__main__" and not self.server.preload_app:
            log.warning("The handler %s is defined in the script itself (__main__): a reload "
                        "(HUP) starts new workers but cannot load new code for it; define it "
                        "in an importable module to reload its code", handler.__qualname__)

    # -- commands: recorded by signal handlers, dispatched here (commands.py) ----------

    def handle_term(self):
        if self.stop_mode:
            log.info("Already stopping (%s): TERM ignored", self.stop_mode.value)
        else:
            self.begin_stop(StopMode.GRACEFUL)

    def handle_int(self):
        self.begin_stop(StopMode.QUICK)

    handle_quit = handle_int

    def handle_hup(self):
        if not self.ignored_while_stopping("HUP"):
            self.start_reload()

    def handle_ttin(self):
        if self.ignored_while_stopping("TTIN"):
            return
        if self.server.workers >= self.server.max_workers:
            log.warning("TTIN ignored: already at max_workers (%d)", self.server.max_workers)
        else:
            self.set_workers(self.server.workers + 1)

    def handle_ttou(self):
        if self.ignored_while_stopping("TTOU"):
            return
        if self.server.workers <= 1:
            log.warning("TTOU ignored: one worker is the fewest")
        else:
            self.set_workers(self.server.workers - 1)

    def handle_usr1(self):
        logfiles.reopen()
        for record in self.pool:
            _signal(record.pid, signal.SIGUSR1)

    def handle_usr2(self):
        """Binary upgrade: a new master, on these listening sockets (upgrade.py)."""
        if self.ignored_while_stopping("USR2"):
            return
        if self.upgrade is not None:
            log.warning("USR2 ignored: the new master (pid %d) is still running; stop "
                        "this one to finish the upgrade", self.upgrade.pid)
            return
        health = [self.health_channel.server.socket] if self.health_channel else []
        try:
            self.upgrade = Upgrade(self.server.listeners + health, self.server.upgrade_files())
        except OSError as error:
            log.error("Upgrade failed to start: %s", error)

    def watch_upgrade(self):
        code = self.upgrade.exited()
        if code is not None:
            self.upgrade.failed(code)
            self.upgrade = None

    def handle_chld(self):
        """Nothing more: every turn reaps."""

    def handle_workers(self, count):
        """`workers N` from the control socket (1 <= N <= max_workers, checked there)."""
        if not self.ignored_while_stopping("workers"):
            self.set_workers(count)

    # -- status: what the control socket's `status` answers ------------------------

    def status(self):
        self.reap()  # (a worker that has just exited is not one any more)
        return master_status(self, monotonic())

    def health(self):
        """What the health listener answers (health.py): ready, booting or draining."""
        if self.stop_mode and self.upgrade is None:
            return "draining"  # (a new master, after USR2, keeps the host in rotation)
        return "ready" if self.announced_ready else "booting"

    def open_health(self):
        """The health listener; a new master (USR2) answers on it once it serves."""
        server = self.server
        sock = server.open_health_listener()
        self.health_channel = Channel(HealthServer(sock, self), server._serve_loop,
                                      listen=not server.upgraded_from)
        log.info("Health listener at: %s (%d)", format_address(sock.getsockname()), self.pid)

    def close_health(self):
        if self.health_channel:
            self.health_channel.close()
            self.health_channel = None

    def channels(self):
        return [channel for channel in (self.control, self.health_channel) if channel]

    def state(self):
        if self.drain_until is not None:
            return "draining"
        if self.stop_mode:
            return f"stopping ({self.stop_mode.value})"
        return "reloading" if self.reloading_from is not None else "serving"

    def ignored_while_stopping(self, name):
        if self.stop_mode:
            log.info("Stopping (%s): %s ignored", self.stop_mode.value, name)
        return self.stop_mode is not None

    def set_workers(self, count, why=None):
        old, self.server.workers = self.server.workers, count
        log.info("Number of workers: %d -> %d%s", old, count, f" ({why})" if why else "")
        self.server.nworkers_changed(count, old)
        self.keep_pool()

    # -- stopping -------------------------------------------------------------

    def begin_stop(self, mode, drain=True):
        """Stop serving: TERM (graceful) or QUIT (quick) every worker.  A
        graceful stop first drains for drain_delay seconds (unless not drain,
        or a new master takes over: see handing_over): the health listener
        answers 503 while the workers still serve.  A quick stop cuts a
        graceful one short; nothing undoes a quick one."""
        if self.stop_mode is StopMode.QUICK or self.stop_mode is mode:
            return
        log.info("Stopping (%s)", mode.value)
        self.notifier.stopping(f"stopping ({mode.value})")
        self.stop_mode = mode
        if self.handing_over():
            if self.health_channel:  # the new master answers for the host from now on
                self.health_channel.stop_accepting()
            drain = False
        delay = self.server.drain_delay
        if mode is StopMode.GRACEFUL and drain and delay:
            log.info("Draining for %g s: health checks answer 503, still serving", delay)
            self.drain_until = monotonic() + delay
        else:
            self.stop_workers()

    def stop_workers(self):
        """The stop proper, in stop_mode: the workers asked to stop, the loop too."""
        self.drain_until = None
        self.stopping.set()
        sig = signal.SIGTERM if self.stop_mode is StopMode.GRACEFUL else signal.SIGQUIT
        for record in self.pool:
            record.retire = record.retire or Retire.STOP
            self.scoreboard.server_stops(record.slot)
            self.ask_to_stop(record, sig)
        self.close_listeners()  # new connections refused from now on (Worker.close_listeners)
        self.server._serve_loop.request_stop()

    def close_listeners(self):
        """Close the master's copies of the listeners (the files stay until
        server_close(): a new master may have them, see handing_over)."""
        for listener in self.server.listeners:
            listener.close()

    def handing_over(self):
        """Whether a new master (USR2) serves, or boots, on our sockets."""
        if self.upgrade is not None:
            self.watch_upgrade()
        return self.upgrade is not None

    def wait_for_workers(self):
        """Reap every worker; SIGKILL the rest when graceful_timeout runs out.

        Signals still count meanwhile: INT or QUIT make the stop quick; a
        worker's exit (SIGCHLD) wakes the wait.  The control socket and the
        health listener (503, draining) still answer.
        """
        while True:
            self.commands.dispatch(self)
            self.reap()
            if not len(self.pool):
                return
            for channel in self.channels():
                channel.expire()
            now = monotonic()
            deadline = self.server.graceful_timeout + min(
                record.asked_at or now for record in self.pool)
            if now >= deadline:
                self.kill_the_rest()
            else:
                self.server._serve_loop.serve_readers(min(deadline - now, self.poll_interval))

    def kill_the_rest(self):
        for record in self.pool:
            if record.state is not Lifecycle.KILLED:
                self.kill(record, f"did not stop within {self.server.graceful_timeout}s")
        self.exit_status = max(self.exit_status, ExitStatus.KILLED)
        self.reap(block=True)

    # -- workers: ask, kill, reap ---------------------------------------------------

    def ask_to_stop(self, record, sig=signal.SIGTERM):
        if record.state is Lifecycle.KILLED:
            return
        record.state = Lifecycle.STOPPING
        record.asked_at = record.asked_at or monotonic()
        _signal(record.pid, sig)

    def kill(self, record, reason):
        """SIGKILL a worker and its process group (its ForkingMixIn children)."""
        log.error("Killing worker %d (pid %d): %s", record.info.number, record.pid, reason)
        record.killed_for = reason
        record.state = Lifecycle.KILLED
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except OSError:
            _signal(record.pid, signal.SIGKILL)  # not its group leader yet

    def retire(self, record, why, at_once=False):
        """Want a worker gone: asked to stop once its replacement serves (or now)."""
        log.info("Retiring worker %d (pid %d): %s", record.info.number, record.pid, why.value)
        record.retire = why
        if at_once:
            self.ask_to_stop(record)

    def reap(self, block=False):
        """Collect every exited worker of ours (never anyone else's children),
        and a new master that failed (USR2); with block, wait for each worker."""
        if self.upgrade is not None:
            self.watch_upgrade()
        for record in self.pool:
            try:
                pid, status = os.waitpid(record.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = record.pid, 0
            if pid:
                self.worker_exited(record, status)

    def worker_exited(self, record, status):
        self.pool.remove(record)
        view = self.scoreboard.read(record.slot)
        self.tally.worker_exited(view.requests)
        self.scoreboard.release(record.slot)
        name = f"Worker {record.info.number} (pid {record.pid})"
        how = _describe_exit(status)
        if not view.booted and record.retire is None and not self.stop_mode:
            self.boot_failed(view.error or record.killed_for or f"it {how}")
        elif record.killed_for:
            log.warning("%s %s", name, how)
        elif record.retire or status == 0:
            log.info("%s %s", name, how)
        else:
            log.error("%s %s unexpectedly", name, how)
        self.server.child_exit(record.info)

    def boot_failed(self, error):
        """Back off; after boot_attempts in a row, give up: the reload, or the master."""
        self.boot_failures += 1
        attempts = self.server.boot_attempts
        if self.boot_failures == 1:
            log.error("Worker failed to boot (attempt 1 of %d): %s", attempts, error)
        else:
            log.warning("Worker failed to boot again (attempt %d of %d)",
                        self.boot_failures, attempts)
        if self.boot_failures < attempts:
            self.spawn_not_before = monotonic() + min(
                0.1 * 2 ** (self.boot_failures - 1), MAX_BOOT_BACKOFF)
            return
        self.boot_failures = 0
        if self.reloading_from is not None:
            self.abort_reload(error)
        elif not self.pool.any_serving():
            self.boot_error = f"worker failed to boot {attempts} times in a row: {error}"
            log.error("Giving up: %s", self.boot_error)
            self.exit_status = ExitStatus.BOOT_ERROR
            self.begin_stop(StopMode.QUICK)
        else:
            self.spawn_not_before = monotonic() + MAX_BOOT_BACKOFF

    # -- watching: one read of each slot a turn ------------------------------------------

    def watch_workers(self):
        now = monotonic()
        requests = 0
        for record in self.pool:
            view = self.scoreboard.read(record.slot)
            requests += view.requests
            if record.state is Lifecycle.KILLED:
                continue
            if record.follow(view, now):
                self.boot_failures = 0  # a worker booted: any crash loop is over
            problem = record.overdue(view, now, self.server)
            if problem:
                self.kill(record, problem)
            elif record.retire is None and record.too_old(now, self.server.max_worker_age):
                self.retire(record, Retire.AGE)
        self.tally.sample(now, requests)

    # -- reload: a new generation beside the old, as nginx does ---------------------------
    #
    # start_reload() bumps the generation and retires every wanted worker;
    # keep_pool() forks the new generation and, once it serves in full, asks
    # the retired workers to stop -- the reload is done; boot_failed() calls
    # abort_reload() if the new generation cannot boot: the old one serves on.

    def start_reload(self):
        try:
            self.server.reload_config()
        except ValueError as error:
            log.error("Reload refused, the running configuration stays: %s", error)
            return
        log.info("Reloading: starting generation %d", self.generation + 1)
        self.notifier.reloading(f"reloading: starting generation {self.generation + 1}")
        self.server.on_reload()
        self.warn_if_not_reloadable()
        if self.reloading_from is None:
            self.reloading_from = self.generation
        self.generation += 1
        self.boot_failures = 0
        for record in self.pool.wanted():
            record.retire = Retire.RELOAD
            if record.state is Lifecycle.BOOTING:  # never served: no need to wait
                self.ask_to_stop(record)
        self.keep_pool()

    def abort_reload(self, error):
        """The new generation cannot boot: keep the old one serving."""
        for record in self.pool:
            if record.generation == self.generation:
                record.retire = Retire.FAILED_RELOAD
                self.ask_to_stop(record)
            elif record.retire is Retire.RELOAD and record.asked_at is None:
                record.retire = None
        kept = [record.generation for record in self.pool.wanted()]
        self.generation = max(kept, default=self.reloading_from)
        self.reloading_from = None
        self.end_listener_change(keep_new=False)
        log.error("Reload failed, keeping generation %d: %s", self.generation, error)
        self.notifier.ready(f"{self.server.workers} workers, generation {self.generation} "
                            "(the reload failed)")

    def replace_listeners(self, sockets):
        """The workers forked from now on accept on sockets (see end_listener_change)."""
        server = self.server
        if self.listeners_before_reload is None:
            self.listeners_before_reload = server.listeners
        server.listeners = list(sockets)
        server.socket = server.listeners[0]
        server.server_address = server.socket.getsockname()
        for sock in sockets:
            if sock not in self.listeners_before_reload:
                server._remember_unix_path(sock)
                log.info("Listening at: %s (%d)", format_address(sock.getsockname()), self.pid)

    def sockets_not_served(self):
        """The master's sockets that a new worker must close: its control
        socket, its health listener, and during a change of listeners the
        listeners left out (or connections would queue where none accepts)."""
        before = self.listeners_before_reload or ()
        own = [sock for channel in self.channels() for sock in channel.sockets()]
        return own + [sock for sock in before if sock not in self.server.listeners]

    def end_listener_change(self, keep_new):
        """The reload is over: close the listeners of the losing side."""
        before, self.listeners_before_reload = self.listeners_before_reload, None
        if before is None:
            return
        server = self.server
        if not keep_new:
            before, server.listeners = server.listeners, before
            server.socket = server.listeners[0]
            server.server_address = server.socket.getsockname()
        for sock in before:
            if sock not in server.listeners:
                self.close_listener(sock)

    def close_listener(self, sock):
        address = sock.getsockname()
        log.info("Closing listener %s", format_address(address))
        sock.close()
        if address in self.server._unix_paths:
            self.server._unix_paths.remove(address)
            _unlink(address)

    # -- spare scaling: once a second, from the idle workers (scaling.py) -------------

    def scale(self):
        self.next_scaling = monotonic() + SCALING_INTERVAL
        if self.reloading_from is not None:
            return  # two generations: their idle counts say nothing
        wanted = self.pool.wanted()
        idle = [record for record in wanted if record.state is Lifecycle.BOOTING
                or self.scoreboard.read(record.slot).idle]
        scaler = self.server.scaler
        change = scaler.decide(len(idle), len(wanted))
        if change > 0:
            self.set_workers(len(wanted) + change,
                             f"scaling up: {len(idle)} idle < spare_min {scaler.spare_min}")
        elif change < 0 and idle:
            record = idle[-1]  # the youngest idle one: the oldest have warm caches
            record.retire = Retire.FEWER
            self.ask_to_stop(record)
            self.set_workers(len(wanted) - 1, f"scaling down: {len(idle)} idle > spare_max "
                             f"{scaler.spare_max}, worker {record.info.number} retired")

    # -- the pool -----------------------------------------------------------------

    def keep_pool(self):
        """Keep server.workers wanted workers; ask the retired ones to stop
        once their replacements serve."""
        if self.stop_mode:
            return
        wanted = self.pool.wanted()
        extra = max(0, len(wanted) - self.server.workers)
        for record in wanted[:extra]:
            self.retire(record, Retire.FEWER, at_once=True)
        wanted = wanted[extra:]
        while len(wanted) < self.server.workers and self.may_spawn(wanted):
            record = self.spawn()
            if record is None:
                self.make_room(self.server.workers - len(wanted))
                break
            wanted.append(record)
        if len(wanted) >= self.server.workers and all(
                record.state is Lifecycle.SERVING for record in wanted):
            for record in self.pool.awaiting_replacement():
                self.ask_to_stop(record)
            if self.reloading_from is not None:
                log.info("Reloaded: generation %d serving", self.generation)
                self.reloading_from = None
                self.end_listener_change(keep_new=True)
                self.announce_ready()
            elif not self.announced_ready:
                self.announce_ready()

    def announce_ready(self):
        """Tell systemd the generation serves; the first time, also that this
        process is the service's main one (a new master after USR2 takes over)."""
        if not self.announced_ready:
            self.announced_ready = True
            self.notifier.mainpid(self.pid)
            if self.health_channel:
                self.health_channel.listen()  # (a new master's, after USR2: from now on)
            if self.server.upgraded_from:
                log.info("Upgrade: serving beside the old master (pid %d); TERM it to "
                         "finish", self.server.upgraded_from)
        self.notifier.ready(f"{self.server.workers} workers, generation {self.generation}")

    def may_spawn(self, wanted):
        if monotonic() < self.spawn_not_before:
            return False
        # While boots fail, one at a time.
        return not (self.boot_failures and any(r.state is Lifecycle.BOOTING for r in wanted))

    def make_room(self, missing):
        """No free slot for `missing` more workers.  Slots free up as the
        workers asked to stop exit; if those are too few, stop the oldest
        workers awaiting replacement now (a rolling reload) rather than wait
        for replacements that cannot start."""
        leaving = sum(record.asked_at is not None for record in self.pool)
        for record in self.pool.awaiting_replacement()[:max(0, missing - leaving)]:
            log.warning("Scoreboard full (%d slots): stopping worker %d (pid %d) before "
                        "its replacement is ready", self.scoreboard.capacity,
                        record.info.number, record.pid)
            self.ask_to_stop(record)
        if not self.waiting_for_room:
            log.warning("Scoreboard full (%d slots): waiting for stopping workers to exit",
                        self.scoreboard.capacity)
            self.waiting_for_room = True

    def spawn(self):
        """Fork a worker of the current generation; None if no slot is free."""
        slot = self.scoreboard.claim(self.generation)
        if slot is None:
            return None
        self.waiting_for_room = False
        info = WorkerInfo(slot + 1, self.generation, monotonic())
        try:
            self.server.pre_fork(info)
            worker = Worker(self.server, self.framework, info, self.scoreboard, self.pid,
                            self.worker_poll_interval(), self.sockets_not_served())
            info.pid = fork_worker(worker, SIGNALS)
        except BaseException:
            self.scoreboard.release(slot)
            raise
        record = WorkerRecord(info, slot)
        self.pool.add(record)
        return record

    def worker_poll_interval(self):
        """A worker's loop beats its heartbeat each turn: often enough for liveness_timeout."""
        return min(self.poll_interval, self.server.liveness_timeout / 4)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe_exit(status):
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("Could not remove %s: %s", path, error)
