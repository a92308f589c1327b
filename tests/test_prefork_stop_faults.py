"""Faults around stopping workers and the master, on real process trees.

1. A retiring worker never swallows a wake-up: with exclusive_accept (one
   worker woken per connection), a worker told to stop just as it was woken
   for a connection still takes it -- or nobody else would be woken for it --
   also when the stop closes its listeners (in-process, through ServeLoop).
   Reloads (HUP), TTOU and max_requests recycling never stall a request.
2. A second signal during a graceful stop never kills the master: INT/QUIT
   make it quick, TERM/HUP/TTIN/TTOU are logged and ignored, USR1 reopens the
   logs -- and the master still reaps every worker before it exits.
3. No orphans from forking workers: a worker's request children go with it.
4. A worker stopped mid-request (SIGSTOP) is found by liveness_timeout; a
   legitimately long request is not.

Every server is tests/apps/serve.py run as a real process (support.start_app);
requests are tests/apps/commands.py's one-line commands over 127.0.0.1.

Long (~460 lines): each fault is a race between a signal and a worker's
state, driven on a real process tree and measured, one test per fault.
"""

import contextlib
import os
import platform
import re
import select
import signal
import socket
import threading
import time

import psutil
import pytest

import prefork
from support import (
    CLIENT_TIMEOUT, Load, Requests, assert_no_zombies, assert_tree_gone, connect, echo, gone,
    live_children, port_is_free, process_tree, recv_line, start_booted, start_prefork,
    started_requests, wait_booted, wait_for, wait_log, wait_replaced, write_slow_app)

QUICK = ("--set", "graceful_timeout=10", "--set", "boot_timeout=5")
STALL = 0.3  # seconds: a request slower than this during a reload was stalled


# -- a client that times each request ---------------------------------------------

class Sequential:
    """One client thread sending echo() requests one after another, a new
    connection each, `pace` seconds apart, from construction until stop()
    (at most `limit`).  With one client, a connection whose wake-up a worker
    swallowed waits until something else wakes a worker: nothing hides a stall.
    timings: [(seconds, Reply)] of the answered; failures: [(words, error)]."""

    def __init__(self, address, limit=200_000, pace=0.0):
        self.address = address
        self.limit = limit
        self.pace = pace
        self.timings = []
        self.failures = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for i in range(self.limit):
            if self._stopping.is_set():
                return
            words = f"request{i}"
            began = time.monotonic()
            try:
                reply = echo(self.address, words)
            except Exception as error:  # noqa: BLE001 -- every failure counts
                self.failures.append((words, f"{error!r} after "
                                             f"{time.monotonic() - began:.2f}s"))
            else:
                self.timings.append((time.monotonic() - began, reply))
            # Pacing, not waiting for a state: keeps the load bounded.
            self._stopping.wait(self.pace)

    def wait_for_replies(self, count, timeout=3, message="replies"):
        """Wait until `count` more requests than now have been answered."""
        target = len(self.timings) + count
        wait_for(lambda: len(self.timings) >= target, timeout=timeout, message=message)

    def answers(self, count, timeout=3):
        """Whether `count` more requests than now are answered within timeout seconds."""
        target = len(self.timings) + count
        try:
            wait_for(lambda: len(self.timings) >= target, timeout=timeout)
        except AssertionError:
            return False
        return True

    @property
    def slowest(self):
        return max(seconds for seconds, _ in self.timings)

    @property
    def generations(self):
        return {reply.generation for _, reply in self.timings}

    def stop(self):
        self._stopping.set()
        self._thread.join(2 * CLIENT_TIMEOUT)
        assert not self._thread.is_alive(), "the client thread did not stop"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def workers_of(master_pid):
    """psutil.Process of each live worker (of each live child) of the master."""
    workers = []
    for pid in live_children(master_pid):
        with contextlib.suppress(psutil.NoSuchProcess):  # exited while we looked
            workers.append(psutil.Process(pid))
    return workers


def assert_no_stall(client, events, answered_after=True):
    """Every request was answered (also after the last event, answered_after),
    none stalled: the figures go in the message."""
    slow = sorted((round(seconds, 3) for seconds, _ in client.timings
                   if seconds >= STALL), reverse=True)
    figures = (f"{len(client.timings)} requests over {events}: slowest "
               f"{client.slowest * 1000:.0f} ms, {len(slow)} slower than {STALL}s "
               f"{slow[:8]}; failures {client.failures[:3]}; "
               f"answered after the last: {answered_after}")
    print(figures)
    assert client.failures == [] and answered_after and not slow, figures


# -- 1. a retiring worker never swallows a wake-up ----------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("mixin", ["sync", "threading"])
@pytest.mark.parametrize("interval, reloads", [(0.5, 6), (2.0, 4)], ids=["0.5s", "2s"])
def test_reloads_never_stall_a_sequential_client(spawn, mixin, interval, reloads):
    """HUP every `interval` seconds while one client sends request after
    request: none waits for the next reload, and the last one is answered."""
    process, address = start_booted(spawn, "--mixin", mixin, *QUICK, workers=2)
    with Sequential(address) as client:
        client.wait_for_replies(20, message="the client to run")
        for _ in range(reloads):
            old = workers_of(process.pid)
            hup_at = time.monotonic()
            os.kill(process.pid, signal.SIGHUP)
            assert_tree_gone(old)  # the new generation serves: the old one was retired
            wait_for(lambda: len(live_children(process.pid)) == 2, message="2 workers")
            # Pacing the reloads (not waiting for a state): one every `interval`.
            time.sleep(max(0.0, hup_at + interval - time.monotonic()))
        answered_after = client.answers(20)
    assert_no_stall(client, f"{reloads} reloads {interval}s apart", answered_after)
    assert client.generations == set(range(1, reloads + 2))
    assert_no_zombies(process.pid)


def generation_of(worker):
    """A worker's generation, from its process title ("... [gen N] ..."); None
    if it has exited meanwhile."""
    try:
        match = re.search(r"\[gen (\d+)\]", " ".join(worker.cmdline()))
    except psutil.Error:
        return None
    return int(match.group(1)) if match else None


def replies_within(load, count, timeout=3):
    """Whether `count` more requests of `load` than now are answered within timeout."""
    target = load.answered() + count
    try:
        wait_for(lambda: load.answered() >= target, timeout=timeout)
    except AssertionError:
        return False
    return True


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mixin", ["sync", "threading"])
def test_thirty_reloads_back_to_back_under_load_lose_nothing(spawn, mixin):
    """30 HUPs, each as soon as the master took the previous one (reloads
    overlap): no request of the load fails, the last one included, and the
    pool ends as 2 workers of generation 31."""
    workers = 2
    process, address = start_booted(spawn, "--mixin", mixin, *QUICK, workers=workers)
    with Load(address, threads=2, limit=5000, pace=0.002) as load:
        load.wait_for_replies(20, "the load to flow")
        for generation in range(2, 32):
            # Back to back: each HUP as soon as the master took the previous one
            # (signals sent faster would merge into one).
            os.kill(process.pid, signal.SIGHUP)
            wait_log(process, f"Reloading: starting generation {generation}")

        wait_for(lambda: [generation_of(w) for w in workers_of(process.pid)] == [31] * workers,
                 timeout=10, message=f"{workers} workers, all of generation 31")
        answered_after = replies_within(load, 20)
    figures = (f"{load.sent} requests, {len(load.failures)} failed {load.failures[:3]}; "
               f"answered after the reloads: {answered_after}; "
               f"generations answering: {sorted(load.generations)}")
    print(figures)
    assert load.failures == [] and answered_after, figures
    assert echo(address).generation == 31
    assert [generation_of(w) for w in workers_of(process.pid)] == [31] * workers
    assert_no_zombies(process.pid)
    assert process.stop(signal.SIGTERM) == 0


def send_and_wait(process, sig, logged):
    """Send sig to the master; wait until it logs `logged` (signals sent
    faster than it takes them would merge into one)."""
    os.kill(process.pid, sig)
    wait_log(process, logged)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mixin", ["sync", "threading"])
def test_ttou_never_stalls_a_sequential_client(spawn, mixin):
    """Two TTIN then two TTOU, 8 times: each TTOU retires the oldest worker at once."""
    cycles, interval = 8, 0.5
    process, address = start_booted(spawn, "--mixin", mixin, *QUICK, workers=2)
    with Sequential(address) as client:
        client.wait_for_replies(20, message="the client to run")
        for cycle in range(1, cycles + 1):
            before = workers_of(process.pid)
            send_and_wait(process, signal.SIGTTIN, "Number of workers: 2 -> 3")
            send_and_wait(process, signal.SIGTTIN, "Number of workers: 3 -> 4")
            wait_booted(process, 2 + 2 * cycle)  # boots logged in all
            wait_for(lambda: len(live_children(process.pid)) == 4, message="4 workers")
            ttou_at = time.monotonic()
            send_and_wait(process, signal.SIGTTOU, "Number of workers: 4 -> 3")
            send_and_wait(process, signal.SIGTTOU, "Number of workers: 3 -> 2")
            assert_tree_gone(before)  # the oldest two
            wait_for(lambda: len(live_children(process.pid)) == 2, message="2 workers")
            # Pacing (not waiting for a state): TTOUs every `interval`.
            time.sleep(max(0.0, ttou_at + interval - time.monotonic()))
        answered_after = client.answers(20)
    assert_no_stall(client, f"{cycles} pairs of TTOUs {interval}s apart", answered_after)
    assert_no_zombies(process.pid)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mixin", ["sync", "threading"])
def test_max_requests_recycling_never_stalls_a_sequential_client(spawn, mixin):
    """A worker that recycles itself stops between requests, never with a
    wake-up of its own pending (HEAD did not stall here either: a guard)."""
    max_requests = 10
    process, address = start_booted(spawn, "--mixin", mixin, *QUICK,
                                    "--set", f"max_requests={max_requests}", workers=2)
    with Sequential(address, pace=0.01) as client:  # light traffic
        client.wait_for_replies(20, message="the client to run")
        recycled = 0
        while recycled < 8:
            wait_log(process, "recycling", f"max_requests ({max_requests})")
            recycled += 1
        answered_after = client.answers(20)
    assert_no_stall(client, f"{recycled} recyclings", answered_after)
    assert_no_zombies(process.pid)


class LineEcho(prefork.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())


def in_epoll_wait(tid):
    """Whether thread tid of this process sleeps in epoll_wait()."""
    with open(f"/proc/self/task/{tid}/wchan") as wchan:
        return "epoll" in wchan.read()


@pytest.mark.timeout(10)
@pytest.mark.skipif(not hasattr(select, "EPOLLEXCLUSIVE"), reason="no EPOLLEXCLUSIVE here")
def test_a_stop_that_closes_the_listener_during_the_wait_still_takes_the_woken_for_request():
    """In-process, the loop of a worker (wake_one): its TERM handler
    interrupts the wait just as a connection has come, and closes the
    listener (Worker.begin_stop, when the whole server stops).  The loop
    still takes that connection, then the listener closes -- closed first,
    the connection stayed queued, the other processes sharing the listener
    never woken for it (two client timeouts during a USR2 upgrade under
    load, once in 40 runs)."""
    server = prefork.TCPServer(("127.0.0.1", 0), LineEcho)
    other = socket.socket(fileno=os.dup(server.fileno()))  # as another worker's copy
    clients = []

    def on_term(signum, frame):  # a connection comes; then the stop, as a worker's
        clients.append(socket.create_connection(server.server_address, CLIENT_TIMEOUT))
        clients[0].sendall(b"woken for\n")
        server._serve_loop.request_stop()
        server._serve_loop.when_wakeups_taken(server.socket.close)

    loop_thread = threading.get_native_id()

    def interrupt():
        wait_for(lambda: in_epoll_wait(loop_thread), message="the loop to wait")
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_term)
    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    try:
        server._serve_loop.run(server, poll_interval=5, wake_one=True)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        interrupter.join(CLIENT_TIMEOUT)
    with clients[0], other:
        assert recv_line(clients[0]) == b"woken for\n"  # taken by the loop
        assert server.socket.fileno() == -1  # and the listener closed after
        other.setblocking(False)
        with pytest.raises(BlockingIOError):
            other.accept()  # nothing left in the queue
    server.server_close()


# -- 2. a second signal during a graceful stop ---------------------------------------

SLOW = 3  # seconds each slow request takes

SECOND_SIGNALS = {  # the second signal: (what the master logs, requests answered?)
    "INT": ("Stopping (quick)", False),
    "QUIT": ("Stopping (quick)", False),
    "TERM": ("Already stopping (graceful): TERM ignored", True),
    "HUP": ("Stopping (graceful): HUP ignored", True),
    "TTIN": ("Stopping (graceful): TTIN ignored", True),
    "TTOU": ("Stopping (graceful): TTOU ignored", True),
    "USR1": ("reopened log files", True),
}


def pid_gone(pid):
    try:
        return gone(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def started_pids(path, count):
    """The pids of the first `count` slow requests to reach their handler
    (see support.started_requests)."""
    started_requests(path, count)
    with open(path) as f:
        return [int(line.split()[0]) for line in f.read().splitlines()[:count]]


POLL_SYSCALLS = {"x86_64": {"7", "271"}, "aarch64": {"73"}}  # poll, ppoll


def wait_until_waiting_for_workers(pid):
    """Wait until the master blocks in poll(): server_close() waiting for its
    workers to exit (ServeLoop.serve_readers; its serve loop polls with epoll
    instead).  Read from /proc/PID/syscall; on another architecture, return
    at once."""
    numbers = POLL_SYSCALLS.get(platform.machine())
    if not numbers:
        return

    def in_select():
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] in numbers
    wait_for(in_select, timeout=5, message="the master to wait for its workers")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", list(SECOND_SIGNALS))
def test_second_signal_during_a_graceful_stop_never_kills_the_master(spawn, started_file,
                                                                     name):
    """TERM with slow requests in flight, then a second signal: the master
    still reaps every worker before it exits -- the port is free at once."""
    logged, answered = SECOND_SIGNALS[name]
    path, env = started_file
    process, address = start_booted(spawn, *QUICK, workers=2, env=env)
    slow = Requests(address, f"sleep {SLOW}", 2)  # one on each (sync) worker
    started_requests(path, 2)
    tree = process_tree(process.pid)
    assert len(tree) == 3

    os.kill(process.pid, signal.SIGTERM)
    wait_log(process, "Stopping (graceful)")
    wait_until_waiting_for_workers(process.pid)
    second_at = time.monotonic()
    os.kill(process.pid, getattr(signal, "SIG" + name))
    try:
        code = process.wait(timeout=SLOW + 3)
    except Exception as error:  # noqa: BLE001 -- reported with the output
        code = repr(error)
    exited_in = time.monotonic() - second_at
    # The master reaped its workers before it exited: none is left, the port is free.
    still = [p for p in tree if not gone(p)]
    assert not still, f"the master exited ({code}) leaving {still}"
    assert port_is_free(address)
    output = process.output()
    assert f"[{process.pid}] [INFO] {logged}" in output, output
    replies = slow.results()
    if answered:  # the graceful stop went on: both requests finished
        assert [reply.partition(" ")[2] for reply in replies] == ["slept"] * 2, replies
    else:  # the stop turned quick: the workers left at once, requests unanswered
        assert replies == ["", ""], replies
        assert exited_in < 1.5, (exited_in, output)
    assert code == prefork.ExitStatus.OK == 0, output


@pytest.mark.timeout(20)
def test_graceful_stop_that_had_to_kill_exits_with_status_1(spawn, started_file):
    """A request that never ends, TERM, graceful_timeout=1: the worker is
    SIGKILLed and the master says so in its exit status (ExitStatus.KILLED)."""
    path, env = started_file
    process, address = start_booted(spawn, "--set", "graceful_timeout=1", workers=2,
                                    env=env)
    hanging = Requests(address, "hang", 1)
    started_requests(path, 1)
    tree = process_tree(process.pid)

    os.kill(process.pid, signal.SIGTERM)
    code = process.wait(timeout=5)
    assert_tree_gone(tree, timeout=1)
    assert port_is_free(address)
    assert hanging.results() == [""]
    output = process.output()
    assert "Killing worker" in output and "did not stop within 1" in output, output
    assert "Traceback" not in output, output
    assert code == prefork.ExitStatus.KILLED == 1, output


# -- 3. no orphans from forking workers -------------------------------------------------

@pytest.mark.timeout(20)
def test_forking_worker_request_children_go_with_it(spawn, started_file):
    """A 30 s request on a ForkingMixIn worker, then TERM with graceful_timeout=2:
    the worker is killed with its request child -- nothing of the tree remains."""
    graceful = 2
    path, env = started_file
    process, address = start_booted(spawn, "--mixin", "forking", "--set", "boot_timeout=5",
                                    "--set", f"graceful_timeout={graceful}", workers=2,
                                    env=env)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as slow:
        slow.sendall(b"sleep 30\n")
        [child] = started_pids(path, 1)
        tree = process_tree(process.pid)  # the master, its workers, the request child
        assert child in [p.pid for p in tree] and len(tree) == 4, tree
        groups = {pid: os.getpgid(pid) for pid in live_children(process.pid)}

        term_at = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=graceful + 5)
        exited_in = time.monotonic() - term_at
        try:
            assert_tree_gone(tree, timeout=1)
        except AssertionError as error:
            raise AssertionError(f"{error} (the request child: pid {child})") from None
        assert port_is_free(address)
        assert slow.recv(100) == b""  # closed unanswered
    assert exited_in < graceful + 1.5, exited_in
    output = process.output()
    assert "Killing worker" in output, output
    assert code == prefork.ExitStatus.KILLED == 1, output
    # Each worker led a process group of its own: the master killed the group.
    assert all(group == pid for pid, group in groups.items()), groups


@pytest.mark.timeout(20)
def test_forking_request_child_past_request_timeout_is_logged(spawn, started_file):
    """A ForkingMixIn request child ended by request_timeout says so in the
    log (not a silent EOF); its worker serves on."""
    path, env = started_file
    process, address = start_booted(spawn, "--mixin", "forking", *QUICK,
                                    "--set", "request_timeout=1", workers=2, env=env)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as hanging:
        hanging.sendall(b"hang\n")
        [child] = started_pids(path, 1)
        line = process.readline_until(lambda l: "request_timeout" in l, timeout=5)
        assert re.search(rf"Worker \d+: a request child \(pid {child}\) ran past "
                         r"request_timeout \(1s\): ending it", line), line
        assert hanging.recv(100) == b""  # closed unanswered
    wait_for(lambda: pid_gone(child), timeout=2, message="the request child to exit")
    assert echo(address).generation == 1  # the worker serves on
    assert "Killing worker" not in "".join(process.lines)
    assert process.stop(signal.SIGTERM) == 0


# -- 4. a worker stuck mid-request --------------------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("mixin", ["sync", "threading"])
def test_worker_stopped_mid_request_is_killed_a_long_request_is_not(spawn, started_file,
                                                                    mixin):
    """liveness_timeout=2: a worker SIGSTOPped in a 30 s request is killed and
    replaced; another worker's 4 s request (its loop busy, its watcher
    beating) is answered."""
    path, env = started_file
    process, address = start_booted(spawn, "--mixin", mixin, *QUICK,
                                    "--set", "liveness_timeout=2", workers=2, env=env)
    before = live_children(process.pid)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as stuck:
        stuck.sendall(b"sleep 30\n")
        [stopped] = started_pids(path, 1)
        os.kill(stopped, signal.SIGSTOP)
        stopped_at = time.monotonic()
        long = Requests(address, "sleep 4", 1)  # only the other worker can take it
        busy = started_pids(path, 2)[1]
        assert {stopped, busy} == before, (stopped, busy, before)

        line = process.readline_until(lambda l: "Killing worker" in l, timeout=6)
        found_in = time.monotonic() - stopped_at
        match = re.search(rf"Killing worker \d+ \(pid {stopped}\): no heartbeat for "
                          r"(\d+\.\d)s: stopped or wedged", line)
        assert match and float(match.group(1)) >= 2.0, line
        try:
            assert stuck.recv(100) == b""  # closed unanswered
        except ConnectionResetError:
            pass
    assert found_in < 3.5, found_in  # (its last beat came up to 0.5 s before the SIGSTOP)
    wait_replaced(process.pid, before, stopped)
    assert echo(address).pid in live_children(process.pid) - {stopped}  # others are served
    assert long.results() == [f"{busy} slept"]  # the long request was not killed
    assert busy in live_children(process.pid)
    assert_no_zombies(process.pid)
    assert process.stop(signal.SIGTERM) == 0
    assert f"(pid {busy})" not in "".join(
        line for line in process.output().splitlines(True) if "Killing" in line)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "threading", "forking"])
def test_a_graceful_stop_refuses_new_connections_while_requests_finish(spawn, tmp_path, kind):
    """From the start of a graceful stop, a new connection is refused -- a
    load balancer retries it on another host -- not queued until the last
    worker exits and then reset; the request in flight still gets its answer."""
    app = write_slow_app(tmp_path)
    process, (address,) = start_prefork(spawn, "-k", kind, app, workers=1, cwd=tmp_path)
    with connect(address) as held:
        held.sendall(b"hold\n")
        assert recv_line(held) == b"holding\n"  # in flight in the worker
        process.popen.send_signal(signal.SIGTERM)
        wait_log(process, "Stopping (graceful)")

        def refused():
            try:
                with connect(address):
                    return False
            except ConnectionRefusedError:
                return True
        wait_for(refused, timeout=2, message="a new connection refused")
        held.sendall(b"go on\n")
        assert recv_line(held) == b"ok\n"
    assert process.wait() == 0
