"""Helpers shared by the test modules: real sockets, real processes, no mocks,
no fixed sleeps.  conftest.py builds its fixtures on these; test modules import
from here (never from one another).

- waiting: wait_for, Background, serving
- in-process framework servers: the server class lists, echo and command handlers, Lab
- socket clients: family_of, recv_all, recv_line, recv_reply, exchange, reset,
  hold, release, request, echo, Reply, parse_reply, datagram_client, Load
  (also on several addresses, with any client function, replies by phase),
  Requests, at_once, pid_of, peak, assert_replies
- processes: Process, start_app, wait_booted, start_booted, wait_log,
  closed_seconds, stop_server, children, live_children, assert_no_zombies,
  wait_replaced, process_tree, gone, assert_tree_gone, set_subreaper (the
  `subreaper` fixture's), exit_code, listening_ports, port_is_free,
  started_requests, set_version
- the prefork command: PREFORK, BOOTED, run_prefork, assert_one_line_error,
  printed_config, spawn_prefork, start_prefork, terminate, listening_addresses,
  logged_addresses, parse_logged_address, booted_workers, LOG_MESSAGE,
  logged_messages, wait_generation, wait_reloaded, free_port, taken_port,
  connect, can_connect, facts, ask_on, ask, connection_holder, http_get,
  http_exchange, parse_http_response, write_config, file_lines, wait_lines,
  copy_app, SLOW_APP, write_slow_app
- the health listener (--health-bind): health_address, health_request,
  health, wait_health, HealthPoller
- running as another user: python_runnable_as
- operating a running master: status_json (the control socket, through
  `prefork status`); sd_notify as systemd receives it: notification_socket,
  notify_receiver, recv_notification

Long (~1300 lines) on purpose: every helper the tests share lives here, so
that no test module imports from another and none repeats a helper.
"""

import ast
import collections
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil

import prefork

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "apps")
PYTHON = sys.executable

CLIENT_TIMEOUT = 5  # seconds, for every client socket
ZOMBIE_TIMEOUT = 2  # seconds a master may take to reap an exited child

# Forking servers driven by serve_forever() in a thread fork a multi-threaded
# process; Python 3.12+ warns about that.  The children only run the handler.
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


def sigint_is_ignored():
    """Whether this process (pytest run in the background, say) ignores SIGINT:
    its children then do too, and their Python never raises KeyboardInterrupt."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


# -- waiting -------------------------------------------------------------------

def wait_for(predicate, timeout=10.0, interval=0.01, message="condition"):
    """Poll predicate() until it returns a true value, and return that value;
    raise AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Background:
    """Run fn(*args) in a daemon thread; done(within) says whether it returned in time."""

    def __init__(self, fn, *args):
        self.thread = threading.Thread(target=fn, args=args, daemon=True)
        self.thread.start()

    def done(self, within):
        self.thread.join(within)
        return not self.thread.is_alive()


@contextlib.contextmanager
def serving(server, poll_interval=0.5):
    """Run server.serve_forever() in a thread; on exit shut down, join (10 s)
    and server_close(), failing if the loop did not stop."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        assert not thread.is_alive(), "serve_forever() did not stop"


# -- in-process framework servers --------------------------------------------------

BASE_SERVERS = [prefork.TCPServer, prefork.UDPServer,
                prefork.UnixStreamServer, prefork.UnixDatagramServer]
MIXED_SERVERS = [
    prefork.ForkingTCPServer, prefork.ForkingUDPServer,
    prefork.ForkingUnixStreamServer, prefork.ForkingUnixDatagramServer,
    prefork.ThreadingTCPServer, prefork.ThreadingUDPServer,
    prefork.ThreadingUnixStreamServer, prefork.ThreadingUnixDatagramServer,
]
ALL_SERVERS = BASE_SERVERS + MIXED_SERVERS
INET_SERVERS = [prefork.TCPServer, prefork.UDPServer]
DATAGRAM_SERVERS = [prefork.UDPServer, prefork.UnixDatagramServer]


def class_id(cls):
    """A pytest id for a server class: its name."""
    return cls.__name__


def is_stream(server):
    """Whether server (or server class) uses a SOCK_STREAM socket."""
    return server.socket_type == socket.SOCK_STREAM


# Every handler notes what it handled in server.handled (lost in a forked child).

class StreamEcho(prefork.StreamRequestHandler):
    """Reads one line, answers b"echo:" + line."""

    def handle(self):
        line = self.rfile.readline()
        self.server.handled.append(line)
        self.wfile.write(b"echo:" + line)


class DatagramEcho(prefork.DatagramRequestHandler):
    """Answers a datagram with b"echo:" + datagram."""

    def handle(self):
        data = self.rfile.read()
        self.server.handled.append(data)
        self.wfile.write(b"echo:" + data)


class BaseEcho(prefork.BaseRequestHandler):
    """Echo with the bare request: a socket, or a (data, socket) pair."""

    def handle(self):
        if isinstance(self.request, tuple):
            data, sock = self.request
            self.server.handled.append(data)
            sock.sendto(b"echo:" + data, self.client_address)
        else:
            data = self.request.recv(1024)
            self.server.handled.append(data)
            self.request.sendall(b"echo:" + data)


def echo_handler(server_class, kind="file"):
    """The echo handler for the server's socket type; kind 'base' uses BaseRequestHandler."""
    if kind == "base":
        return BaseEcho
    return StreamEcho if is_stream(server_class) else DatagramEcho


class Commands(prefork.StreamRequestHandler):
    """One line command per connection, for tests that steer a handler
    (server.handled gets the handling thread):

    echo TEXT  reply 'echo:TEXT'          raise  raise ValueError (an Exception)
    abort      raise server.abort_with    pid    reply the handling process's pid
    hold       reply 'holding', wait for the client's next line, reply 'done'
    shutdown   reply 'stopping', call server.shutdown()
    """

    def handle(self):
        self.server.handled.append(threading.current_thread())
        command, _, arg = self.rfile.readline().strip().partition(b" ")
        getattr(self, "do_" + command.decode())(arg)

    def do_echo(self, text):
        self.wfile.write(b"echo:" + text + b"\n")

    def do_raise(self, _):
        raise ValueError("handler failed on purpose")

    def do_abort(self, _):
        raise self.server.abort_with

    def do_pid(self, _):
        self.wfile.write(b"%d\n" % os.getpid())

    def do_hold(self, _):
        self.wfile.write(b"holding\n")
        self.rfile.readline()
        self.wfile.write(b"done\n")

    def do_shutdown(self, _):
        self.wfile.write(b"stopping\n")
        self.server.shutdown()


class Lab:
    """Servers and clients made by one test, all cleaned up by close().

    Clients time out after CLIENT_TIMEOUT; on close they go first (so held
    handlers see EOF), then forked children still unreaped are killed, then
    every server is closed (which reaps the children and joins the threads).
    """

    def __init__(self, unix_dir):
        self.unix_dir = unix_dir
        self.servers = []
        self.clients = []
        self._names = itertools.count()

    def path(self, stem):
        """A fresh socket path in unix_dir."""
        return os.path.join(self.unix_dir, f"{stem}{next(self._names)}.sock")

    def address(self, server_class):
        """A fresh address for server_class: a Unix path, or 127.0.0.1 port 0."""
        if server_class.address_family == socket.AF_UNIX:
            return self.path("server")
        return ("127.0.0.1", 0)

    def server(self, server_class, handler=None, bind_and_activate=True, **class_attrs):
        """server_class (subclassed with class_attrs, if any) on a fresh address,
        with the echo handler by default and server.handled = []."""
        if class_attrs:
            server_class = type(server_class.__name__, (server_class,), class_attrs)
        handler = handler or echo_handler(server_class)
        server = server_class(self.address(server_class), handler, bind_and_activate)
        server.handled = []
        self.servers.append(server)
        return server

    def client(self, server):
        """A socket connected to server (bound first on Unix datagram, to get replies)."""
        sock = socket.socket(server.address_family, server.socket_type)
        self.clients.append(sock)
        sock.settimeout(CLIENT_TIMEOUT)
        if server.address_family == socket.AF_UNIX and not is_stream(server):
            sock.bind(self.path("client"))
        sock.connect(server.server_address)
        return sock

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for sock in self.clients:
            sock.close()
        for server in self.servers:
            for pid in getattr(server, "active_children", None) or ():
                os.kill(pid, signal.SIGKILL)  # unreaped, so still ours
            server.server_close()


# -- socket clients --------------------------------------------------------------

def family_of(address):
    """AF_UNIX for a path, AF_INET for a (host, port) pair."""
    return socket.AF_UNIX if isinstance(address, str) else socket.AF_INET


def recv_all(sock):
    """Everything up to EOF."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def recv_line(sock):
    """One line with its b"\\n", byte by byte (no makefile: it would keep the
    socket open); shorter, without b"\\n", if EOF comes first."""
    line = b""
    while not line.endswith(b"\n") and (byte := sock.recv(1)):
        line += byte
    return line


def recv_reply(sock):
    """A line from a stream, a datagram otherwise."""
    return recv_line(sock) if sock.type == socket.SOCK_STREAM else sock.recv(65536)


def exchange(client, payload):
    """Send payload; the reply is everything up to EOF on a stream, one datagram otherwise."""
    client.sendall(payload)
    return recv_all(client) if client.type == socket.SOCK_STREAM else client.recv(65536)


def reset(sock):
    """Close sock with a TCP RST (SO_LINGER 0) rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def hold(lab, server, count):
    """count clients that sent 'hold' to a Commands server (taken when it will)."""
    clients = [lab.client(server) for _ in range(count)]
    for client in clients:
        client.sendall(b"hold\n")
    return clients


def release(client):
    """Let a held Commands handler finish (asserts it answered 'done')."""
    client.sendall(b"go\n")
    assert recv_line(client) == b"done\n"


def request(address, command, timeout=CLIENT_TIMEOUT):
    """Send `command` + "\\n" on a new connection to a stream server (TCP or Unix)
    and return its reply line without the "\\n".  Returns "" if the server closed
    the connection unanswered; raises ConnectionError if it closed mid-line, and
    OSError (a timeout, a reset) as the socket does."""
    with socket.socket(family_of(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(command.encode() + b"\n")
        reply = recv_line(sock)
    if reply and not reply.endswith(b"\n"):
        raise ConnectionError(f"reply to {command!r} cut short: {reply!r}")
    return reply.decode().rstrip("\n")


Reply = collections.namedtuple("Reply", "pid generation text")


def parse_reply(line):
    """A tests/apps/commands.py echo reply "<pid> <generation> TEXT" as a Reply."""
    pid, generation, text = line.split(" ", 2)
    return Reply(int(pid), int(generation), text)


def echo(address, words="hello"):
    """An "echo WORDS" request to a tests/apps/commands.py stream server: the
    Reply; AssertionError unless exactly the words came back."""
    line = request(address, f"echo {words}")
    assert line.count(" ") >= 2, f"no echo reply to {words!r}: {line!r}"
    reply = parse_reply(line)
    assert reply.text == words, reply
    return reply


@contextlib.contextmanager
def datagram_client(address, unix_dir):
    """A datagram socket for the server's family, timing out after CLIENT_TIMEOUT.
    A Unix datagram client binds unix_dir/client, or the server could not answer it."""
    with socket.socket(family_of(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        if isinstance(address, str):
            sock.bind(os.path.join(unix_dir, "client"))
        yield sock


class Load:
    """Client threads, `threads` on each address (`address`: one, or a list),
    each sending sequential requests -- a new connection each, distinct words
    each -- from construction until stop(): at most `limit` requests in all,
    `pace` seconds apart per thread.  A request is client(address, words):
    by default echo() (tests/apps/commands.py; it returns a Reply); any
    function of the same signature (e.g. one built on ask(), for
    command_apps.Echo).  Counts: sent; replies (what client returned, in
    arrival order); failures ((words, error), any exception counts).
    A test may set load.phase (None at first): each reply is noted with the
    phase in force when its request was sent, for replies_to().  A context
    manager whose exit stops it."""

    def __init__(self, address, threads=2, limit=100_000, pace=0.0, client=echo):
        self.addresses = address if isinstance(address, list) else [address]
        self.limit = limit
        self.pace = pace
        self.client = client
        self.phase = None
        self.sent = 0
        self.replies = []
        self.failures = []
        self._phased = []  # (phase when sent, reply)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        targets = [a for a in self.addresses for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(n, a), daemon=True)
                         for n, a in enumerate(targets)]
        for thread in self._threads:
            thread.start()

    @property
    def generations(self):
        """The worker generations that answered (the replies must be Replies)."""
        return {reply.generation for reply in self.replies}

    def answered(self):
        return len(self.replies)

    def replies_to(self, phase):
        """The replies to the requests sent while load.phase was `phase`."""
        return [reply for sent_in, reply in list(self._phased) if sent_in == phase]

    def wait_for_replies(self, count, message="replies", phase=None):
        """Wait until `count` more requests than now have been answered (with
        phase: `count` more of those sent in that phase)."""
        def answered():
            return len(self.replies) if phase is None else len(self.replies_to(phase))
        target = answered() + count
        wait_for(lambda: answered() >= target, message=message)

    def stop(self):
        """Stop the threads; fail if one does not end within 2 * CLIENT_TIMEOUT."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(2 * CLIENT_TIMEOUT)
            assert not thread.is_alive(), "a client thread did not stop"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self, n, address):
        for i in itertools.count():
            with self._lock:
                if self._stopping.is_set() or self.sent >= self.limit:
                    return
                self.sent += 1
            words = f"client{n} request{i}"
            phase = self.phase
            try:
                reply = self.client(address, words)
            except Exception as error:  # noqa: BLE001 -- every failure counts
                self.failures.append((words, error))
            else:
                self._phased.append((phase, reply))
                self.replies.append(reply)
            if self.pace:
                # Pacing, not waiting for a state: keeps the load bounded; stop() ends it.
                self._stopping.wait(self.pace)


class Requests:
    """The same command sent with request() on `count` connections at once,
    each in a thread."""

    def __init__(self, address, command, count):
        self.replies = [None] * count

        def send(index):
            try:
                self.replies[index] = request(address, command)
            except Exception as error:  # noqa: BLE001 -- reported by results()
                self.replies[index] = repr(error)

        self._threads = [threading.Thread(target=send, args=(i,), daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    def results(self):
        """Each connection's reply line ("" if unanswered, repr(error) if it
        failed), after waiting up to 10 s for each."""
        for thread in self._threads:
            thread.join(10)
        return self.replies


def at_once(address, commands):
    """Send each command on a connection of its own, all released together by
    a barrier, each in a thread; return the reply lines in the same order
    (repr(error) for a failed one)."""
    barrier = threading.Barrier(len(commands))
    replies = [None] * len(commands)

    def send(index):
        barrier.wait()
        try:
            replies[index] = request(address, commands[index])
        except Exception as error:  # noqa: BLE001 -- the caller sees it in the replies
            replies[index] = repr(error)

    senders = [threading.Thread(target=send, args=(i,), daemon=True)
               for i in range(len(commands))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    return replies


def pid_of(reply):
    """The pid a tests/apps/commands.py reply starts with."""
    return int(reply.split()[0])


def peak(address):
    """tests/apps/commands.py `peak`: the most requests in flight at once in
    the worker that answers, since its last `peak` (which it resets)."""
    return int(request(address, "peak").split()[1])


def assert_replies(requests, word):
    """Every connection of `requests` (a Requests) was answered "<pid> <word>"."""
    replies = requests.results()
    assert all(reply.partition(" ")[2] == word for reply in replies), replies


# -- processes ---------------------------------------------------------------------

def gone(process):
    """Whether a psutil.Process has exited: no longer running (pid reuse aside),
    or a zombie left to its parent whose threads have all exited -- its first
    thread reads as a zombie while the others are still exiting, holding the
    process's files (a listener among them)."""
    try:
        return not process.is_running() or (process.status() == psutil.STATUS_ZOMBIE
                                             and process.num_threads() <= 1)
    except psutil.NoSuchProcess:
        return True


class Process:
    """A process started by a test in a session of its own: its output
    (stdout and stderr) is read line by line; stop() ends it and everything it
    started."""

    def __init__(self, args, env=None, cwd=ROOT, pass_fds=()):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, pass_fds=pass_fds)
        self.pid = self.popen.pid
        self.lines = []

    def readline_until(self, predicate, timeout=15.0):
        """Read output lines (kept in self.lines) until one satisfies predicate;
        return that line, or raise AssertionError after timeout seconds."""
        result = {}

        def reader():
            for line in self.popen.stdout:
                self.lines.append(line)
                if predicate(line):
                    result["line"] = line
                    return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if "line" not in result:
            raise AssertionError("expected output not seen; got:\n" + "".join(self.lines))
        return result["line"]

    def output(self):
        """Everything the process printed (call after it has exited)."""
        rest = self.popen.stdout.read()
        self.lines.append(rest)
        return "".join(self.lines)

    def wait(self, timeout=15.0):
        """Its exit code (-N if killed by signal N); TimeoutExpired after timeout."""
        return self.popen.wait(timeout)

    def descendants(self):
        """psutil.Process of every live process it started: its descendants and,
        to reach orphans in other process groups, every process of its session."""
        found = {}
        with contextlib.suppress(psutil.Error):
            found = {p.pid: p for p in psutil.Process(self.pid).children(recursive=True)}
        for pid in psutil.pids():
            if pid in found or pid in (self.pid, os.getpid()):
                continue
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(pid) == self.pid:
                    found[pid] = psutil.Process(pid)
        return found

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send sig, wait up to timeout seconds for the process to exit, then
        SIGKILL every process of its tree still there -- collected before
        signalling, so descendants outside its process group are reached too --
        and reap it.  Returns its exit code (-N if killed by signal N)."""
        tree = self.descendants()
        if sig == signal.SIGKILL:  # nothing to wait for: take the tree down at once
            self._kill_tree(tree, timeout)
        elif self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self._kill_tree(tree, timeout)
        self.popen.wait(timeout)
        return self.popen.returncode

    def _kill_tree(self, tree, timeout):
        """SIGSTOP the process and `tree` (so none can fork any more), add what
        they started meanwhile until nothing new appears, SIGKILL them all and
        wait up to timeout seconds for them to be gone."""
        members = dict(tree)
        if self.popen.poll() is None:
            with contextlib.suppress(psutil.Error):
                members[self.pid] = psutil.Process(self.pid)
        while True:
            for member in list(members.values()):
                with contextlib.suppress(psutil.Error):
                    member.suspend()
            new = {pid: p for pid, p in self.descendants().items() if pid not in members}
            for member in list(members.values()):
                with contextlib.suppress(psutil.Error):
                    new.update({p.pid: p for p in member.children() if p.pid not in members})
            if not new:
                break
            members.update(new)
        for member in members.values():
            with contextlib.suppress(psutil.Error):
                member.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.poll()  # reap the process itself, if it is dead
        others = [p for pid, p in members.items() if pid != self.pid]
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(map(gone, others)), timeout=timeout,
                     message="the killed processes to be gone")


def start_app(spawn, *args, env=None):
    """Start tests/apps/serve.py with these arguments; return (process, address)
    once it prints READY.  address is ("127.0.0.1", port) or a Unix path."""
    process = spawn([PYTHON, os.path.join(APPS, "serve.py"), *args], env=env)
    line = process.readline_until(lambda l: l.startswith("READY "))
    text = line.split(None, 1)[1].strip()
    if text.startswith("unix:"):
        return process, text[len("unix:"):]
    host, _, port = text.rpartition(":")
    return process, (host, int(port))


def wait_booted(process, count, since=0):
    """Read the log until `count` workers have logged that they booted after
    process.lines[since] (some may have done so before the master printed
    READY, or before this call: every line from `since` on counts)."""
    booted = [line for line in process.lines[since:] if "Booted worker" in line]

    def is_boot_line(line):
        if "Booted worker" in line:
            booted.append(line)
        return len(booted) >= count

    if len(booted) < count:
        process.readline_until(is_boot_line)


def start_booted(spawn, *args, workers=2, env=None):
    """start_app() with `workers` workers; return (process, address) once every
    worker has logged that it booted."""
    process, address = start_app(spawn, "--set", f"workers={workers}", *args, env=env)
    wait_booted(process, workers)
    return process, address


def wait_log(process, *fragments):
    """The next output line that contains every fragment."""
    return process.readline_until(lambda line: all(f in line for f in fragments))


def closed_seconds(process):
    """How long serve.py's server_close() took: read from its "CLOSED <s>" line."""
    line = process.readline_until(lambda l: l.startswith("CLOSED "))
    return float(line.split()[1])


def stop_server(process, expected_code=0):
    """SIGTERM (graceful stop); assert the master exited with expected_code."""
    assert process.stop(signal.SIGTERM) == expected_code, process.output()


def children(pid):
    """The direct children of process pid, zombies included: {pid: psutil status}."""
    found = {}
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # reaped while we looked
            found[child.pid] = child.status()
    return found


def live_children(pid=None):
    """pids of the children of process pid (default: this process) that have not exited."""
    return {child for child, status in children(pid or os.getpid()).items()
            if status != psutil.STATUS_ZOMBIE}


def assert_no_zombies(pid, timeout=ZOMBIE_TIMEOUT):
    """Process pid reaps its exited children promptly: within timeout seconds
    none of them is left a zombie."""
    wait_for(lambda: psutil.STATUS_ZOMBIE not in children(pid).values(),
             timeout=timeout, message=f"process {pid} to reap its exited children")


def wait_replaced(master_pid, before, gone_pid, timeout=5):
    """Wait until worker gone_pid is reaped and the master has as many children
    as the pids `before` again, with new ones; return the new pids."""
    def replaced():
        now = children(master_pid)
        new = set(now) - before
        return gone_pid not in now and len(now) == len(before) and new
    return wait_for(replaced, timeout=timeout, message=f"worker {gone_pid} to be replaced")


def process_tree(pid):
    """[psutil.Process of pid, then of each of its descendants]."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def assert_tree_gone(tree, timeout=5):
    """Every psutil.Process of tree exits (see gone()) within timeout seconds."""
    try:
        wait_for(lambda: all(map(gone, tree)), timeout=timeout,
                 message="every process of the tree to exit")
    except AssertionError as error:
        raise AssertionError(f"{error}; still running: {[p for p in tree if not gone(p)]}") \
            from None


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def set_subreaper(on):
    """Make this process a child subreaper (on: True) -- it adopts the orphans
    of its descendants, such as a new master after USR2 once the old one has
    exited, so that exit_code() can read their exit status -- or no longer
    one (False); OSError if prctl() refuses.  The `subreaper` fixture
    (conftest.py) does it for a test."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def exit_code(pid, timeout=10):
    """The exit code of process pid -- a child of this process (adopted: see
    set_subreaper()) -- once it has exited, waited for up to timeout seconds."""
    def exited():
        found, status = os.waitpid(pid, os.WNOHANG)
        return (os.waitstatus_to_exitcode(status),) if found else None
    return wait_for(exited, timeout=timeout, message=f"process {pid} to exit")[0]


def listening_ports(pid):
    """The TCP ports process pid listens on (its own descriptors, inherited ones too)."""
    return {conn.laddr[1] for conn in psutil.Process(pid).net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN}


def port_is_free(address):
    """Whether a new server can bind and listen on the TCP address (with
    SO_REUSEADDR, as allow_reuse_address does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen()
        except OSError:
            return False
    return True


def started_requests(path, count, timeout=5):
    """Wait until `count` slow requests ("sleep", "hang") have reached their
    handler, as tests/apps/commands.py notes in `path`; return their start
    times (time.monotonic(), comparable with this process's)."""
    def lines():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            found = f.read().splitlines()
        return found if len(found) >= count else None
    return [float(line.split()[2])
            for line in wait_for(lines, timeout=timeout, message=f"{count} requests started")]


def set_version(module_path, old, new):
    """Rewrite `VERSION = "old"` as `VERSION = "new"` in a copy of a handler
    module (tests/apps/commands.py, http_handlers.py), for a reload to load."""
    with open(module_path) as f:
        text = f.read()
    assert f'VERSION = "{old}"' in text
    with open(module_path, "w") as f:
        f.write(text.replace(f'VERSION = "{old}"', f'VERSION = "{new}"'))


# -- the prefork command ------------------------------------------------------------
# Its tests run the real command (cwd tests/apps by default) and talk to the
# applications of tests/apps/command_apps.py, whose answers end with facts().

PREFORK = [PYTHON, "-m", "prefork"]  # the command, as its console script runs it
BOOTED = re.compile(r"Booted worker (\d+) \(pid (\d+), generation (\d+)\)")
LOG_MESSAGE = re.compile(r"^\[[^\]]*\] \[(\d+)\] \[(\w+)\] (.*)$")  # [time] [pid] [LEVEL] text


def run_prefork(*args, cwd=APPS, env=None, timeout=30, command=None):
    """Run the prefork command to its end (for --help, --check-config, startup
    errors): a subprocess.CompletedProcess with text stdout and stderr.
    $PREFORK_CMD_ARGS is unset and ROOT is on $PYTHONPATH unless env says
    otherwise.  command: what to run in place of PREFORK (the console
    script, or PREFORK behind a wrapper such as setpriv)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("PREFORK_CMD_ARGS", None)
    full_env.update(env or {})
    return subprocess.run([*(command or PREFORK), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(result, message):
    """A run_prefork() result in which the command refused with one line
    `prefork: MESSAGE` on stderr (no traceback), nothing on stdout, exit
    status 1.  message: MESSAGE exactly, or a compiled pattern (re.compile)
    that MESSAGE -- one line -- matches whole (re.fullmatch)."""
    if isinstance(message, re.Pattern):
        text = result.stderr.removeprefix("prefork: ").removesuffix("\n")
        refused = (result.stderr == f"prefork: {text}\n" and "\n" not in text
                   and message.fullmatch(text) is not None)
    else:
        refused = result.stderr == f"prefork: {message}\n"
    assert (result.returncode, result.stdout, refused) == (1, "", True), \
        f"exit status {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"


def printed_config(result):
    """--print-config's `name = repr(value)` lines, as a dict of the values
    (comments left out); AssertionError unless the command exited 0."""
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            values[name] = ast.literal_eval(value)
    return values


def spawn_prefork(spawn, *args, cwd=APPS, env=None, pass_fds=()):
    """Start the prefork command with exactly these args ($PREFORK_CMD_ARGS
    empty, env added) through the spawn fixture; return its Process at once,
    waiting for nothing (for runs that log to a file, or never get ready)."""
    return spawn([*PREFORK, *args], cwd=cwd, env={"PREFORK_CMD_ARGS": "", **(env or {})},
                 pass_fds=pass_fds)


def start_prefork(spawn, *args, workers=2, config=None, cwd=APPS, env=None, pass_fds=()):
    """Start the prefork command with `-w workers` and args (bind 127.0.0.1:0
    unless args bind); return (process, addresses) once every worker has
    booted.  addresses: what the master logged it listens at, in order --
    ("127.0.0.1", port) tuples and Unix paths.
    config: a config file that sets bind and workers itself, given as -c, with
    neither -b nor -w added (so that a HUP may change them); `workers` is then
    only how many boots to wait for."""
    if config is not None:
        args = ("-c", str(config), *args)
    else:
        if not any(arg in ("-b", "--bind") or arg.startswith("--bind=") for arg in args):
            args = ("-b", "127.0.0.1:0", *args)
        args = ("-w", str(workers), *args)
    process = spawn_prefork(spawn, *args, cwd=cwd, env=env, pass_fds=pass_fds)
    wait_booted(process, workers)
    return process, listening_addresses(process)


def terminate(process, tree=None, expected=0, timeout=10):
    """Stop the master with SIGTERM (a graceful stop); assert that every
    process of `tree` (a process_tree() list; by default taken just before the
    signal) exits by itself -- before the spawn fixture's SIGKILL -- and that
    the master exits with status `expected` within timeout seconds.  Returns
    all it printed."""
    tree = process_tree(process.pid) if tree is None else tree
    os.kill(process.pid, signal.SIGTERM)
    code = process.wait(timeout)
    assert_tree_gone(tree)  # first: a descendant left would hold the output open
    output = process.output()
    assert code == expected, output
    return output


def listening_addresses(process):
    """The addresses in the master's "Listening at: ADDRESS (pid)" lines so far."""
    return logged_addresses(process.lines)


def logged_addresses(lines):
    """The addresses in the "Listening at: ADDRESS (pid)" lines among lines
    (of the output, or of an --error-logfile), in order."""
    found = []
    for line in lines:
        if "Listening at: " in line:
            text = line.split("Listening at: ", 1)[1].rsplit(" (", 1)[0]
            found.append(parse_logged_address(text))
    return found


def parse_logged_address(text):
    """("host", port) or a Unix path, from listeners.format_address()'s text."""
    if text.startswith("unix:"):
        return text[len("unix:"):]
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def booted_workers(lines, generation=1):
    """{pid: worker number} of the workers of `generation` that logged
    "Booted worker N (pid P, generation G)" among lines."""
    found = {}
    for line in lines:
        match = BOOTED.search(line)
        if match and int(match.group(3)) == generation:
            found[int(match.group(2))] = int(match.group(1))
    return found


def logged_messages(lines, pid):
    """The messages (without time, pid and level) that process pid logged
    among lines (of the output, or of an --error-logfile)."""
    found = []
    for line in lines:
        match = LOG_MESSAGE.match(line.rstrip("\n"))
        if match and int(match.group(1)) == pid:
            found.append(match.group(3))
    return found


def wait_generation(process, generation, count):
    """Read the output until `count` workers of `generation` have booted, then
    wait until the master's live children are exactly those (an older
    generation has left); return their {pid: worker number}."""
    if len(booted_workers(process.lines, generation)) < count:
        process.readline_until(
            lambda _: len(booted_workers(process.lines, generation)) >= count)
    workers = booted_workers(process.lines, generation)
    assert len(workers) == count, workers
    wait_for(lambda: live_children(process.pid) == set(workers),
             message=f"only the {count} workers of generation {generation} left")
    return workers


def wait_reloaded(process, generation, count):
    """After a HUP: read the output up to "Reloaded: generation N serving",
    then as wait_generation() (returns the new workers' {pid: number})."""
    wait_log(process, f"Reloaded: generation {generation} serving")
    return wait_generation(process, generation, count)


def free_port():
    """A TCP port of 127.0.0.1 that was free a moment ago (bound to 0, then
    closed): for a bind that must name its port (a config file read again on
    HUP, a message that names it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def taken_port():
    """A TCP port of 127.0.0.1 on which another socket listens until the
    block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def connect(address, timeout=CLIENT_TIMEOUT):
    """A stream socket, timing out after `timeout`, connected to a (host, port)
    -- IPv4 or IPv6 -- or a Unix path; OSError as connect() raises it."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection(address[:2], timeout=timeout)


def can_connect(address):
    """Whether a connection to address is accepted (or queued) now."""
    try:
        connect(address).close()
    except OSError:
        return False
    return True


def facts(text):
    """The NAME=VALUE words of a tests/apps/command_apps.py answer, as a dict:
    pid, uid, gid and worker as ints (worker stays "-" outside a worker),
    imported_by as a (pid, uid) pair of ints, the others (version, software)
    as text."""
    found = dict(word.split("=", 1) for word in text.split() if "=" in word)
    for name in ("pid", "worker", "uid", "gid"):
        if found.get(name, "-").isdigit():
            found[name] = int(found[name])
    if "imported_by" in found:
        pid, uid = found["imported_by"].split("/")
        found["imported_by"] = (int(pid), int(uid))
    return found


def ask_on(sock, line="hi"):
    """Send line to command_apps.Echo on a connected stream socket and read
    its answer: its facts(); AssertionError unless the answer is one line
    "echo LINE FACTS"."""
    sock.sendall(line.encode() + b"\n")
    reply = recv_line(sock).decode()
    assert reply.startswith(f"echo {line} ") and reply.endswith("\n"), repr(reply)
    return facts(reply)


def ask(address, line="hi"):
    """ask_on() a new connection to address (see connect()), closed after."""
    with connect(address) as sock:
        return ask_on(sock, line)


def connection_holder(sock, pids):
    """The pid, among pids, of the process that holds the server side of
    sock's TCP connection (the worker that accepted it), read from psutil;
    None while none of them does.  A pid that has gone holds nothing."""
    ours = sock.getsockname()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.raddr and tuple(conn.raddr) == ours:
                    return pid
    return None


def http_get(address, path="/"):
    """(status, body text) of a GET of path on a new connection to a
    (host, port) address."""
    connection = http.client.HTTPConnection(*address[:2], timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def http_exchange(address, raw, timeout=CLIENT_TIMEOUT):
    """Send raw bytes on a new connection (see connect()) to an HTTP server;
    everything it answered up to EOF."""
    with connect(address, timeout) as sock:
        return exchange(sock, raw)


def parse_http_response(raw):
    """(status line, {lower-case header name: value}, body bytes) of a raw
    HTTP response; AssertionError if its head is not complete."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete HTTP head: {raw!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, body


def write_config(path, text):
    """Write text to the file at path (a config file, a module), replacing
    what was there; return the path as a str (for -c)."""
    with open(path, "w") as file:
        file.write(text)
    return str(path)


def file_lines(path):
    """The lines (without their "\\n") of the file at path; [] if there is none."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().splitlines()
    except FileNotFoundError:
        return []


def wait_lines(path, fragment, count=1, timeout=10):
    """Wait until `count` lines of the file at path contain fragment; return
    those lines (all of them, `count` or more)."""
    def found():
        lines = [line for line in file_lines(path) if fragment in line]
        return lines if len(lines) >= count else None
    return wait_for(found, timeout=timeout, message=f"{count} lines with {fragment!r} in {path}")


def copy_app(directory, name="command_apps.py"):
    """A copy of tests/apps/NAME in directory (for a test that rewrites it, or
    runs it from elsewhere); returns the copy's path as a str."""
    path = os.path.join(directory, name)
    shutil.copy(os.path.join(APPS, name), path)
    return path


# A slow stream handler application, written by write_slow_app() where a test
# runs the command: one line command per connection, each answered "ok" --
#   sleep S  sleep S seconds first;
#   hold     answer "holding" at once, then keep the worker busy until the
#            client sends another line (then "ok") or closes (no answer).
SLOW_APP = '''\
import socketserver
import time


class Slow(socketserver.StreamRequestHandler):
    def handle(self):
        command, _, arg = self.rfile.readline().decode().strip().partition(" ")
        if command == "sleep":
            time.sleep(float(arg))
        elif command == "hold":
            self.wfile.write(b"holding\\n")
            if not self.rfile.readline():
                return  # the client left: nobody to answer
        self.wfile.write(b"ok\\n")
'''


def write_slow_app(directory):
    """Write SLOW_APP as DIRECTORY/slow_app.py (replacing what was there) and
    return the application to name to the command run with cwd=directory:
    "slow_app:Slow"."""
    write_config(os.path.join(directory, "slow_app.py"), SLOW_APP)
    return "slow_app:Slow"


# -- the health listener -------------------------------------------------------------
# The master's HTTP health checks (--health-bind, prefork/health.py): 200
# "ready\n", 503 "booting\n" or 503 "draining\n".

def health_address(process):
    """The ("127.0.0.1", port) -- or Unix path -- of the master's `Health
    listener at: ADDRESS (PID)` line (read so far, else waited for);
    AssertionError unless PID is the master's."""
    def is_health_line(line):
        return "Health listener at: " in line

    found = [line for line in process.lines if is_health_line(line)]
    line = found[0] if found else process.readline_until(is_health_line)
    text = line.split("Health listener at: ", 1)[1].strip()
    address, _, pid = text.rpartition(" (")
    assert pid == f"{process.pid})", line
    return parse_logged_address(address)


def health_request(method="GET", path="/healthz"):
    """A request as Kubernetes' probe sends it."""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.30\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n").encode()


def health(address, method="GET", path="/healthz", timeout=CLIENT_TIMEOUT):
    """(status, body text) of a health check on a new connection."""
    status_line, _, body = parse_http_response(
        http_exchange(address, health_request(method, path), timeout))
    return int(status_line.split()[1]), body.decode()


def wait_health(address, expected, within):
    """Poll health(address) until it answers `expected` (a (status, body)
    pair); the seconds it took; AssertionError (with the last answers) if not
    within `within` seconds."""
    started = time.monotonic()
    answers = []

    def answered():
        answers.append(health(address))
        return answers[-1] == expected
    try:
        wait_for(answered, timeout=within, interval=0.005, message=f"health {expected}")
    except AssertionError:
        raise AssertionError(f"no {expected} within {within}s; last answers: {answers[-3:]}") \
            from None
    return time.monotonic() - started


class HealthPoller:
    """health(address) in a loop in a thread, `pace` s apart, from
    construction until stop(): answers is [(time.monotonic() when sent,
    (status, body) -- or repr(error) if it failed, refused or took over
    `slow` seconds)].  A context manager whose exit stops it."""

    def __init__(self, address, pace=0.005, slow=2.0):
        self.answers = []
        self._stopping = threading.Event()

        def poll():
            while not self._stopping.is_set():
                sent = time.monotonic()
                try:
                    answer = health(address, timeout=CLIENT_TIMEOUT)
                    if time.monotonic() - sent > slow:
                        answer = f"slow: {time.monotonic() - sent:.2f}s for {answer}"
                except Exception as error:  # noqa: BLE001 -- every failure counts
                    answer = repr(error)
                self.answers.append((sent, answer))
                self._stopping.wait(pace)  # pacing, not waiting for a state

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def wait_for_answers(self, count, since=0.0):
        """Wait until `count` answers were sent after the monotonic time `since`."""
        wait_for(lambda: sum(sent > since for sent, _ in self.answers) >= count,
                 message=f"{count} health answers")

    def stop(self):
        self._stopping.set()
        self._thread.join(CLIENT_TIMEOUT + 1)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


# -- operating a running master -------------------------------------------------------
# Its control socket (prefork/control.py) through the `prefork status` client,
# and the sd_notify datagrams it sends to systemd (prefork/systemd.py).

def status_json(*args, env=None):
    """Run `prefork status --json ARGS` to its end (ARGS say which master:
    --control PATH, --pid FILE or --name NAME; env as run_prefork's): the
    master's answer, a dict; AssertionError unless the client exited 0 with
    nothing on stderr."""
    result = run_prefork("status", "--json", *args, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result
    return json.loads(result.stdout)


def notification_socket(address):
    """A Unix datagram socket bound to address (a path, or "\\0name" for an
    abstract one) as systemd's notification socket is: SO_PASSCRED on, so
    that recv_notification() learns each sender's pid.  recv() times out after
    CLIENT_TIMEOUT.  The caller closes it (it is a context manager)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # (bound first: no autobind)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(CLIENT_TIMEOUT)
    return sock


@contextlib.contextmanager
def notify_receiver(directory):
    """(socket, env) for a command that runs as a Type=notify service: a
    notification_socket() bound at DIRECTORY/notify (a short directory:
    unix_dir), and the environment that points the command at it
    (NOTIFY_SOCKET) and keeps its default control socket in directory
    (XDG_RUNTIME_DIR).  The socket is closed when the block ends."""
    path = os.path.join(directory, "notify")
    with notification_socket(path) as sock:
        yield sock, {"NOTIFY_SOCKET": path, "XDG_RUNTIME_DIR": str(directory)}


def recv_notification(sock):
    """The next sd_notify datagram "K=V\\nK=V..." on a notification_socket(),
    as systemd reads it: (its sender's pid, {K: V}).  It waits as long as the
    socket's timeout says: socket.timeout after it (BlockingIOError at once
    from a non-blocking socket with nothing queued)."""
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))  # struct ucred
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[:4], sys.byteorder)
    return pid, dict(line.split("=", 1) for line in data.decode().split("\n"))


def python_runnable_as(prefix):
    """A Python (>= 3.10) that runs behind prefix (setpriv/runuser as another
    user): sys.executable if it does, else the system's; None if none does.
    (An interpreter under /root, or one that needs its own shared library,
    may not run as another user.)"""
    candidates = [sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3",
                  "/usr/local/bin/python3"]
    for python in dict.fromkeys(candidates):
        if not os.path.exists(python):
            continue
        result = subprocess.run(
            [*prefix, python, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"],
            capture_output=True, timeout=30)
        if result.returncode == 0:
            return python
    return None
