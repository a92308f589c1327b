"""Connections kept open never hold a stop or a reload (issue 14).

A handler owns its connection: an HTTP/1.1 keep-alive handler sits in handle()
between requests.  When a worker begins to stop (TERM to the master, the old
generation on HUP), its idle connections must close at once (a clean EOF), a
request in progress must finish with "Connection: close" -- and nothing may
change in normal operation.  graceful_timeout is 20 s throughout, so that a
worker held by a connection would show as a 20 s wait.  Other protocols hear
the stop through server.stopping or a handler's stop_connection(); one that
does not is SIGKILLed at graceful_timeout, and the master's exit status says so.

Servers are real processes (tests/apps/serve.py with tests/apps/http_handlers.py,
tests/apps/xmlrpc_serve.py, examples/feed_server.py); clients are http.client,
xmlrpc.client and plain sockets on 127.0.0.1.

Long (~500 lines): each behaviour is shown for sync, threading and forking
workers, through real HTTP clients, and the feed example is run as a user would.
"""

import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import xmlrpc.client

import psutil
import pytest

from support import (
    APPS, CLIENT_TIMEOUT, PYTHON, ROOT, assert_no_zombies, assert_tree_gone, children,
    connection_holder, gone, parse_reply, process_tree, recv_line, set_version, start_booted,
    started_requests, wait_booted, wait_for)

MIXINS = ["sync", "threading", "forking"]
GRACEFUL = ("--set", "graceful_timeout=20")
FAST = 1.0   # seconds: what "at once" may take, at most
SLOW = 2.0   # seconds GET /slow takes (http_handlers.SLOW)


# -- the server and its clients -----------------------------------------------------

def start_http(spawn, mixin, handler="http_handlers:KeepAliveHTTP", path=APPS, env=None):
    """serve.py with two workers of `mixin` running `handler`, graceful_timeout=20."""
    return start_booted(spawn, "--mixin", mixin, "--path", path, "--handler", handler,
                        *GRACEFUL, workers=2, env=env)


class KeepAlive:
    """An HTTP/1.1 client (http.client) on one connection, kept open.

    `raw` is a dup of its socket: it outlives http.client's own close, so the
    test can see the server's EOF.  send() never reconnects: a request on a
    connection the server closed fails.
    """

    def __init__(self, address):
        self.http = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
        self.http.connect()
        self.sock = self.http.sock
        self.raw = self.sock.dup()

    def get(self, path="/"):
        self.send("GET", path)
        return self.response()

    def send(self, method, path, body=None, headers=None):
        assert self.http.sock is self.sock, "http.client would open a new connection"
        self.http.request(method, path, body, headers or {})

    def response(self):
        """(status, its Connection header, the body as a support.Reply)."""
        response = self.http.getresponse()
        body = response.read().decode()
        return response.status, response.getheader("Connection"), parse_reply(body)

    def closed_at(self, within=5.0):
        """time.monotonic() when the server closed the connection (EOF, nothing
        more to read); AssertionError if it sent bytes or kept it open."""
        self.raw.settimeout(within)
        try:
            data = self.raw.recv(1)
        except TimeoutError:
            raise AssertionError(f"the connection is still open after {within}s") from None
        assert data == b"", f"unexpected bytes instead of EOF: {data!r}"
        return time.monotonic()

    def close(self):
        self.http.close()
        self.raw.close()


@pytest.fixture
def clients():
    """clients(address) -> a KeepAlive; every one closed after the test."""
    made = []

    def connect(address):
        made.append(KeepAlive(address))
        return made[-1]

    yield connect
    for client in made:
        client.close()


def send_term(process):
    """TERM the master; return when it was sent."""
    began = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    return began


def exit_code_within(process, began, limit):
    """The master's exit code, asserting it exited within `limit` seconds of `began`."""
    try:
        code = process.wait(timeout=max(0.0, began + limit - time.monotonic()) + 0.5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the master is still running {limit}s after the signal") from None
    elapsed = time.monotonic() - began
    assert elapsed < limit, f"the master took {elapsed:.2f}s to exit"
    return code


def wait_lines(process, fragment, count, timeout=15.0):
    """Read the output until `count` lines (read so far, or new) contain fragment."""
    seen = sum(fragment in line for line in process.lines)

    def enough(line):
        nonlocal seen
        seen += fragment in line
        return seen >= count

    if seen < count:
        process.readline_until(enough, timeout=timeout)


def wait_workers_stopping(process, count=2):
    """Wait until `count` workers have logged that their stop began."""
    try:
        wait_lines(process, "stopping: asked to stop", count, timeout=5)
    except AssertionError as error:
        raise AssertionError(f"{count} workers did not begin to stop; {error}") from None


def workers_of(process):
    """psutil.Process of every descendant of the master: its workers (and their
    request children)."""
    return process_tree(process.pid)[1:]


def wait_new_generation_ready(process, generation, count=2):
    """time.monotonic() once `count` workers of `generation` have logged their boot."""
    wait_lines(process, f"generation {generation})", count)
    return time.monotonic()


def owner_of(process, client_sock, request_child=False):
    """The process of the master's tree that has accepted client_sock's
    connection (with request_child, the ForkingMixIn child serving it)."""
    def find():
        members = {member.pid: member for member in workers_of(process)}
        if request_child:
            for worker in children(process.pid):  # the workers: leave their children
                members.pop(worker, None)
        return members.get(connection_holder(client_sock, members))
    return wait_for(find, timeout=5, message="a worker to accept the connection")


class TermPassedOn:
    """With forking workers, a worker passes the TERM on to its request children
    after logging that it stops: know when the child serving client_sock
    has handled it, before the client sends what must see the stop.

    The child is blocked in a read meanwhile; the signal wakes it, its handler
    runs, the read resumes: one more voluntary context switch, and nothing
    else wakes it.  For sync and threading workers, nothing to wait for: the
    worker's log line comes from its own stop.
    """

    def __init__(self, process, client_sock, mixin):
        self.child = None
        if mixin == "forking":
            self.child = owner_of(process, client_sock, request_child=True)
            wait_for(lambda: self.child.status() == psutil.STATUS_SLEEPING,
                     message="the request child to wait for its client")
            self.switches = self.child.num_ctx_switches().voluntary

    def wait(self):
        if self.child is not None:
            wait_for(lambda: self.child.num_ctx_switches().voluntary > self.switches,
                     timeout=5, message="the request child to handle the TERM")


# -- HTTP/1.1 keep-alive -------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_term_closes_an_idle_keep_alive_connection_at_once(spawn, clients, mixin):
    process, address = start_http(spawn, mixin)
    client = clients(address)
    status, connection, reply = client.get("/")
    assert (status, connection, reply.text) == (200, None, "v1")  # kept alive
    tree = process_tree(process.pid)

    began = send_term(process)
    assert client.closed_at() - began < FAST  # a clean EOF, as after a keep-alive timeout
    assert exit_code_within(process, began, FAST) == 0
    assert "Killing" not in process.output()
    assert_tree_gone(tree)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_hup_retires_the_old_generation_at_once_and_new_code_answers(
        spawn, clients, unix_dir, mixin):
    module_path = os.path.join(unix_dir, "reloadable_http.py")
    shutil.copy(os.path.join(APPS, "http_handlers.py"), module_path)
    process, address = start_http(spawn, mixin, "reloadable_http:KeepAliveHTTP", path=unix_dir)
    client = clients(address)
    status, _, reply = client.get("/")
    assert (status, reply.generation, reply.text) == (200, 1, "v1")
    old_generation = workers_of(process)  # (forking: with the child holding the connection)

    set_version(module_path, "v1", "v2")
    os.kill(process.pid, signal.SIGHUP)
    ready = wait_new_generation_ready(process, 2)
    try:
        wait_for(lambda: all(map(gone, old_generation)), timeout=FAST,
                 message="the old generation to leave")
    except AssertionError:
        raise AssertionError(f"the old generation is still running {FAST}s after the new "
                             "one was ready") from None
    assert client.closed_at() - ready < FAST  # the idle connection was closed, cleanly

    new_client = clients(address)
    status, connection, reply = new_client.get("/")
    assert (status, connection, reply.generation, reply.text) == (200, None, 2, "v2")
    assert "Killing" not in "".join(process.lines)
    assert_no_zombies(process.pid)
    began = send_term(process)
    assert exit_code_within(process, began, FAST) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_term_lets_a_request_in_flight_finish_with_connection_close(
        spawn, clients, started_file, mixin):
    path, env = started_file
    process, address = start_http(spawn, mixin, env=env)
    client = clients(address)
    assert client.get("/")[0] == 200  # a keep-alive connection, as a browser's
    client.send("GET", "/slow")
    [started] = started_requests(path, 1)

    began = send_term(process)
    status, connection, reply = client.response()
    assert (status, connection, reply.text) == (200, "close", "slept")
    closed = client.closed_at()
    assert closed - (started + SLOW) < FAST  # then closed at once
    assert exit_code_within(process, began, started + SLOW - began + FAST) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_an_idle_connection_stays_usable_in_normal_operation(spawn, clients, mixin):
    """Closing idle connections early is no fix: left alone for 5 s, the
    connection is still open, and a second request on it is answered."""
    process, address = start_http(spawn, mixin)
    client = clients(address)
    first = client.get("/")
    # The one wait of fixed length: it is the test.  Readable would mean EOF.
    assert select.select([client.raw], [], [], 5.0)[0] == [], "the server closed it"
    second = client.get("/")
    assert first[:2] == second[:2] == (200, None)
    assert second[2].pid == first[2].pid  # (forking: the same request child)
    assert client.http.sock is client.sock  # the same connection
    began = send_term(process)
    assert exit_code_within(process, began, FAST) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_a_partly_sent_request_is_in_progress_and_answered(
        spawn, clients, started_file, mixin):
    """A slow upload: headers and half the body of a POST sent when TERM comes
    (on a connection that was idle before it).  It keeps its time to finish."""
    path, env = started_file
    process, address = start_http(spawn, mixin, env=env)
    client = clients(address)
    assert client.get("/")[0] == 200
    client.http.putrequest("POST", "/")
    client.http.putheader("Content-Length", "10")
    client.http.endheaders()
    client.http.send(b"12345")
    started_requests(path, 1)  # do_POST reads the body
    term = TermPassedOn(process, client.sock, mixin)

    began = send_term(process)
    wait_workers_stopping(process)
    term.wait()
    client.http.send(b"67890")
    status, connection, reply = client.response()
    assert (status, connection, reply.text) == (200, "close", "got 10 bytes")
    client.closed_at()
    assert exit_code_within(process, began, FAST) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_a_connection_accepted_before_term_gets_its_first_request_answered(
        spawn, clients, mixin):
    """Connected (and accepted) before the stop, its first request sent just after:
    answered, with Connection: close -- not reset."""
    process, address = start_http(spawn, mixin)
    client = clients(address)
    owner_of(process, client.sock)
    term = TermPassedOn(process, client.sock, mixin)

    began = send_term(process)
    wait_workers_stopping(process)
    term.wait()
    status, connection, reply = client.get("/")
    assert (status, connection, reply.text) == (200, "close", "v1")
    client.closed_at()
    assert exit_code_within(process, began, FAST) == 0


# -- the standard library's own handlers -----------------------------------------------

@pytest.mark.timeout(30)
def test_xmlrpc_keep_alive_connection_then_term_exits_at_once(spawn, clients):
    """xmlrpc.server's SimpleXMLRPCRequestHandler (HTTP/1.1) under
    PreforkMixIn over the stdlib's SimpleXMLRPCServer: an idle connection
    after a call is closed on TERM, and the master exits at once."""
    process = spawn([PYTHON, os.path.join(APPS, "xmlrpc_serve.py"), "--set", "workers=2",
                     *GRACEFUL])
    line = process.readline_until(lambda l: l.startswith("READY "))
    host, _, port = line.split()[1].rpartition(":")
    address = (host, int(port))
    wait_booted(process, 2)

    proxy = xmlrpc.client.ServerProxy(f"http://{host}:{port}/")  # a keep-alive transport
    assert proxy.add(2, 3) == 5
    client = clients(address)  # and a raw connection, to watch its EOF
    client.send("POST", "/RPC2", xmlrpc.client.dumps((), "where"),
                {"Content-Type": "text/xml"})
    response = client.http.getresponse()
    assert response.status == 200 and response.getheader("Connection") is None
    ([pid, generation],), _ = xmlrpc.client.loads(response.read())
    assert generation == 1

    began = send_term(process)
    assert client.closed_at() - began < FAST
    assert exit_code_within(process, began, FAST) == 0
    proxy("close")()


# -- a handler that does not hear the stop ----------------------------------------------

@pytest.mark.timeout(30)
def test_a_handler_that_ignores_the_stop_is_killed_and_the_status_says_so(spawn):
    """A non-HTTP handler that reads for as long as the client stays: the stop
    cannot reach it, so graceful_timeout (1 s) runs out, the master SIGKILLs its
    worker and exits with status 1 (ExitStatus.KILLED), not 0."""
    process, address = start_booted(spawn, "--handler", "http_handlers:LineEcho",
                                    "--set", "graceful_timeout=1", workers=2)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"hello\n")
        assert recv_line(sock) == b"hello\n"
        tree = process_tree(process.pid)
        began = send_term(process)
        assert exit_code_within(process, began, 1 + FAST) == 1
        assert time.monotonic() - began >= 1  # it did wait graceful_timeout
        assert recv_line(sock) == b""  # its worker killed: the connection closed
    output = process.output()
    assert re.search(r"Killing worker \d \(pid \d+\): did not stop within 1", output), output
    assert_tree_gone(tree)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_a_line_handler_with_stop_connection_ends_at_once(spawn, mixin):
    """Another protocol hears the stop through the handler's stop_connection()."""
    process, address = start_booted(spawn, "--mixin", mixin, *GRACEFUL,
                                    "--handler", "http_handlers:StoppableLineEcho", workers=2)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"hello\n")
        assert recv_line(sock) == b"hello\n"
        began = send_term(process)
        assert recv_line(sock) == b""
        assert time.monotonic() - began < FAST
        assert exit_code_within(process, began, FAST) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", MIXINS)
def test_an_http_handlers_own_stop_connection_is_called_too(spawn, mixin):
    """An HTTP handler that keeps its connection as a stream hears the stop
    through its own stop_connection(), beside prefork's idle-connection closing."""
    process, address = start_booted(spawn, "--mixin", mixin, *GRACEFUL,
                                    "--handler", "http_handlers:StreamingHTTP", workers=2)
    connection = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"ok\n"
    began = send_term(process)
    assert exit_code_within(process, began, FAST) == 0
    connection.close()


# -- examples/feed_server.py: a line protocol that keeps connections open ------------------

def start_feed(spawn):
    process = spawn([PYTHON, os.path.join(ROOT, "examples", "feed_server.py"),
                     "--port", "0", "--workers", "2"])
    line = process.readline_until(lambda l: "serving on " in l)
    host, port = re.search(r"serving on ([\d.]+):(\d+)", line).groups()
    wait_booted(process, 2)
    return process, (host, int(port))


def subscribe(address, topic):
    """A socket subscribed to topic, its first feed line read; returns (sock, that line)."""
    sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
    sock.sendall(f"subscribe {topic}\n".encode())
    assert recv_line(sock) == f"subscribed to {topic}\n".encode()
    line = recv_line(sock).decode()
    assert line.startswith(f"{topic} 1: worker "), line
    return sock, line


def goodbye_at(sock):
    """time.monotonic() when the feed said goodbye and closed (feed lines before it
    are skipped); AssertionError if it ended otherwise."""
    while (line := recv_line(sock)) != b"bye: server restarting\n":
        assert line and line.endswith(b"\n"), f"the feed ended without a goodbye: {line!r}"
    said = time.monotonic()
    assert recv_line(sock) == b"", "more after the goodbye"
    return said


@pytest.mark.timeout(30)
def test_feed_example_ends_its_feeds_on_term(spawn):
    process, address = start_feed(spawn)
    feeds = [subscribe(address, topic)[0] for topic in ("news", "weather")]
    tree = process_tree(process.pid)

    began = send_term(process)
    for sock in feeds:
        with sock:
            assert goodbye_at(sock) - began < FAST
    assert exit_code_within(process, began, FAST) == 0
    assert_tree_gone(tree)


@pytest.mark.timeout(30)
def test_feed_example_hands_over_to_the_new_generation_on_hup(spawn):
    process, address = start_feed(spawn)
    feeds = [subscribe(address, topic)[0] for topic in ("news", "weather")]
    old_generation = workers_of(process)

    os.kill(process.pid, signal.SIGHUP)
    ready = wait_new_generation_ready(process, 2)
    for sock in feeds:
        with sock:
            assert goodbye_at(sock) - ready < FAST
    assert_tree_gone(old_generation, timeout=FAST)
    sock, line = subscribe(address, "news")  # the subscriber reconnects
    with sock:
        assert ", generation 2, " in line, line
    began = send_term(process)
    assert exit_code_within(process, began, FAST) == 0
    assert "Killing" not in process.output()
