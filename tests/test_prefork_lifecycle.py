"""The prefork master's life cycle, driven by real signals on a real process tree:
HUP reloads under load, TTIN/TTOU, graceful and quick stops, shutdown() from
another thread, block_on_close, USR1 log reopening -- and never a zombie.

Every server is tests/apps/serve.py run as a real process (see conftest.py);
requests are tests/apps/commands.py's one-line commands over 127.0.0.1.
"""

import os
import shutil
import signal
import socket
import threading
import time

import psutil
import pytest

from conftest import APPS, start_app, wait_for

QUICK = ("--set", "graceful_timeout=5", "--set", "boot_timeout=5")


# -- clients -------------------------------------------------------------------

def request(address, command):
    """Send one command on a new connection; return its reply line ('' if none)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()


def echo(address):
    """(pid, generation) of the worker that answered an "echo" request."""
    pid, generation, _ = request(address, "echo hi").split(" ", 2)
    return int(pid), int(generation)


class LoadClient:
    """Threads doing sequential "echo" requests, a new connection each, until
    stop() -- at most `limit` requests in all.  Every failure is recorded."""

    def __init__(self, address, threads=2, limit=1000, pace=0.002):
        self.address = address
        self.limit = limit
        self.pace = pace
        self.sent = 0
        self.generations = set()
        self.failures = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads)

    def answered(self):
        return self.sent - len(self.failures)

    def _run(self, n):
        for i in range(self.limit):
            with self._lock:
                if self._stopping.is_set() or self.sent >= self.limit:
                    return
                self.sent += 1
            words = f"load {n} {i}"
            try:
                reply = request(self.address, "echo " + words)
                _, generation, rest = reply.split(" ", 2)
                assert rest == words, f"wrong reply {reply!r}"
                with self._lock:
                    self.generations.add(int(generation))
            except Exception as error:  # noqa: BLE001 -- every failure counts
                with self._lock:
                    self.failures.append(f"{words}: {error!r}")
            # Pacing, not waiting for a state: keeps the load bounded; stop() ends it.
            self._stopping.wait(self.pace)


class Requests:
    """The same command sent on `count` connections at once, each in a thread."""

    def __init__(self, address, command, count):
        self.replies = [None] * count

        def send(index):
            try:
                self.replies[index] = request(address, command)
            except Exception as error:  # noqa: BLE001 -- reported by replies()
                self.replies[index] = repr(error)

        self._threads = [threading.Thread(target=send, args=(i,), daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    def results(self):
        for thread in self._threads:
            thread.join(10)
        return self.replies


def assert_replies(requests, word):
    """Every request of `requests` was answered "<pid> <word>"."""
    replies = requests.results()
    assert all(reply.partition(" ")[2] == word for reply in replies), replies


# -- processes -------------------------------------------------------------------

def children(pid):
    """The master's children (zombies included) that still exist."""
    return psutil.Process(pid).children()


def status(process):
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return None


def live_children(pid):
    """pids of the master's children that have not exited."""
    return {child.pid for child in children(pid)
            if status(child) not in (None, psutil.STATUS_ZOMBIE)}


def assert_no_zombies(pid):
    """Exited children are reaped at once: none is left a zombie for more than a moment."""
    wait_for(lambda: not any(status(child) == psutil.STATUS_ZOMBIE for child in children(pid)),
             timeout=2, message=f"master {pid} to reap its zombies")


def process_tree(pid):
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def gone(process):
    """Exited: no longer running (pid reuse aside), or a zombie left to init."""
    return not process.is_running() or status(process) in (None, psutil.STATUS_ZOMBIE)


def assert_tree_gone(tree, timeout=5):
    try:
        wait_for(lambda: all(gone(p) for p in tree), timeout=timeout,
                 message="every process of the tree to exit")
    except AssertionError as error:
        raise AssertionError(f"{error}; still running: {[p for p in tree if not gone(p)]}") \
            from None


def port_is_free(address):
    """A new server can bind and listen on the port (as allow_reuse_address does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen()
        except OSError:
            return False
    return True


def started_requests(path, count):
    """Wait until `count` requests have reached their handler; return their start times."""
    def lines():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            found = f.read().splitlines()
        return found if len(found) >= count else None
    return [float(line.split()[2]) for line in wait_for(lines, timeout=5,
                                                        message=f"{count} requests started")]


def closed_seconds(process):
    line = process.readline_until(lambda l: l.startswith("CLOSED "))
    return float(line.split()[1])


@pytest.fixture
def started_file(unix_dir):
    """$PREFORK_TEST_STARTED_FILE for tests/apps/commands.py: one line per slow request."""
    path = os.path.join(unix_dir, "started")
    return path, {"PREFORK_TEST_STARTED_FILE": path}


# -- reload, scale ---------------------------------------------------------------

def set_version(module_path, old, new):
    with open(module_path) as f:
        text = f.read()
    assert f'VERSION = "{old}"' in text
    with open(module_path, "w") as f:
        f.write(text.replace(f'VERSION = "{old}"', f'VERSION = "{new}"'))


def reload_to(process, address, module_path, started_path, versions, generation):
    """Rewrite the handler's module, HUP the master; wait until the new generation
    runs the new code and every worker of the old one has exited -- the old one's
    request in flight finished first."""
    old_version, new_version = versions
    old_workers = [psutil.Process(pid) for pid in live_children(process.pid)]
    slow = Requests(address, "sleep 0.5", 1)
    started_requests(started_path, generation - 1)  # one slow request per reload
    set_version(module_path, old_version, new_version)
    os.kill(process.pid, signal.SIGHUP)
    wait_for(lambda: request(address, "version").split()[1] == new_version,
             message=f"VERSION {new_version!r} to answer")
    wait_for(lambda: echo(address)[1] == generation, message=f"generation {generation}")
    assert_tree_gone(old_workers)
    assert_no_zombies(process.pid)
    assert_replies(slow, "slept")
    for _ in range(4):
        assert echo(address)[1] == generation


def test_two_reloads_under_load_lose_nothing_and_run_new_code(spawn, started_file, unix_dir):
    path, env = started_file
    module_path = os.path.join(unix_dir, "reloadable_commands.py")
    shutil.copy(os.path.join(APPS, "commands.py"), module_path)
    process, address = start_app(spawn, "--path", unix_dir, "--set", "workers=2", *QUICK,
                                 "--handler", "reloadable_commands:StreamCommands", env=env)
    assert request(address, "version").split()[1] == "v1"
    assert echo(address)[1] == 1

    with LoadClient(address) as load:
        wait_for(lambda: load.answered() >= 10, message="load to start")
        reload_to(process, address, module_path, path, ("v1", "version-2"), generation=2)
        reload_to(process, address, module_path, path, ("version-2", "version-three"),
                  generation=3)
        answered = load.answered()
        wait_for(lambda: load.answered() >= answered + 10, message="load after the reloads")

    assert load.failures == []
    assert load.sent < load.limit, "the load must run through both reloads"
    assert load.generations == {1, 2, 3}
    assert len(live_children(process.pid)) == 2
    assert process.stop(signal.SIGTERM) == 0


def test_ttin_and_ttou_change_the_worker_count(spawn):
    process, address = start_app(spawn, "--set", "workers=2", *QUICK)
    wait_for(lambda: len(live_children(process.pid)) == 2, message="2 workers")
    with LoadClient(address) as load:
        os.kill(process.pid, signal.SIGTTIN)
        wait_for(lambda: len(live_children(process.pid)) == 3, message="3 workers")
        assert_no_zombies(process.pid)
        os.kill(process.pid, signal.SIGTTOU)
        wait_for(lambda: len(children(process.pid)) == 2, message="back to 2 workers")
        assert_no_zombies(process.pid)
        answered = load.answered()
        wait_for(lambda: load.answered() >= answered + 10, message="load after TTOU")
    assert load.failures == []
    assert process.stop(signal.SIGTERM) == 0


# -- stopping --------------------------------------------------------------------

SLOW = 2.0  # seconds each slow request takes


@pytest.mark.parametrize("mixin", ["sync", "threading"])
@pytest.mark.parametrize("block_on_close", [True, False])
def test_sigterm_finishes_requests_in_flight(spawn, started_file, mixin, block_on_close):
    """Graceful stop: every slow request completes, the master exits 0, the whole
    tree is gone and the port is free.  server_close() waits for the workers with
    block_on_close, and returns at once without (the workers finish on their own)."""
    path, env = started_file
    count = 2 if mixin == "sync" else 4  # sync: one request per worker at a time
    process, address = start_app(spawn, "--mixin", mixin, "--set", "workers=2", *QUICK,
                                 "--set", f"block_on_close={block_on_close}", env=env)
    slow = Requests(address, f"sleep {SLOW}", count)
    starts = started_requests(path, count)
    tree = process_tree(process.pid)
    assert len(tree) == 3

    os.kill(process.pid, signal.SIGTERM)
    process.readline_until(lambda line: "Stopping (graceful)" in line)
    remaining = max(starts) + SLOW - time.monotonic()  # at the latest, once serving stopped
    closed = closed_seconds(process)
    assert process.wait() == 0

    if block_on_close:
        assert closed >= remaining - 0.1, (closed, remaining)
    else:
        assert closed < 0.5, closed
    assert_replies(slow, "slept")
    assert_tree_gone(tree)
    wait_for(lambda: port_is_free(address), timeout=2, message="the port to be free")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_sigint_and_sigquit_stop_quickly(spawn, started_file, sig):
    path, env = started_file
    process, address = start_app(spawn, "--set", "workers=2", *QUICK, env=env)
    hanging = Requests(address, "hang", 1)
    started_requests(path, 1)
    tree = process_tree(process.pid)

    began = time.monotonic()
    os.kill(process.pid, sig)
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - began < 2
    assert hanging.results() == [""]  # the connection closed unanswered
    assert_tree_gone(tree, timeout=2)


def test_shutdown_from_another_thread_is_graceful(spawn, started_file, unix_dir):
    path, env = started_file
    control = os.path.join(unix_dir, "control")
    process, address = start_app(spawn, "--set", "workers=2", *QUICK,
                                 "--control", control, env=env)
    slow = Requests(address, "sleep 1", 1)
    started_requests(path, 1)
    tree = process_tree(process.pid)

    assert request(control, "shutdown").startswith("done ")
    closed_seconds(process)
    assert process.wait() == 0
    assert_replies(slow, "slept")
    assert_tree_gone(tree)


# -- log files -------------------------------------------------------------------

def log_pids(path, message):
    """pids of the processes that logged `message` in the log file at `path`."""
    try:
        with open(path) as f:
            return {int(line.split("] [", 2)[1]) for line in f if message in line}
    except FileNotFoundError:
        return set()


def test_usr1_reopens_log_files_in_master_and_workers(spawn, unix_dir):
    log_file = os.path.join(unix_dir, "prefork.log")
    process, address = start_app(spawn, "--set", "workers=2", *QUICK, "--log-file", log_file)
    workers = wait_for(lambda: len(log_pids(log_file, "Booted worker")) == 2
                       and log_pids(log_file, "Booted worker"), message="2 workers booted")
    assert workers == live_children(process.pid)

    os.rename(log_file, log_file + ".1")
    os.kill(process.pid, signal.SIGUSR1)
    everyone = {process.pid, *workers}
    wait_for(lambda: log_pids(log_file, "reopened log files") == everyone,
             message="every process to reopen its log file")
    assert echo(address)[0] in workers
    assert process.stop(signal.SIGTERM) == 0
    assert log_pids(log_file, "Stopping") == {process.pid}  # the master logs to the new file
