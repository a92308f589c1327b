"""Where prefork's framework does not hang where the standard library's would
(the only places it differs from it):

1. shutdown() wakes the loop at once, and may be called from the serving
   thread (a handler, a signal handler) without deadlocking.
2. A listener shared with other processes never blocks the loop on a request
   another process took.
3. ThreadingMixIn.max_threads stops accepting while that many requests run,
   leaving new connections in the kernel's queue.

Each test uses a long poll_interval, so that a loop that only noticed things
every poll_interval (as the stdlib's does) fails it.
"""

import contextlib
import os
import select
import signal
import socket
import time
import traceback

import psutil
import pytest

import prefork
from support import (
    BASE_SERVERS, FORK_WARNING, PYTHON, Background, Commands, class_id, exchange, hold,
    recv_all, recv_line, recv_reply, release, serving, wait_for)

pytestmark = pytest.mark.filterwarnings(FORK_WARNING)

LONG_POLL = 30  # seconds: far beyond any test's patience
PROMPT = 2  # seconds: "at once", with room for a loaded machine


def is_sleeping(pid):
    """Whether the process is blocked (in a single-threaded server: in select())."""
    return psutil.Process(pid).status() == psutil.STATUS_SLEEPING


# -- 1. shutdown() ------------------------------------------------------------------

def test_shutdown_from_another_thread_does_not_wait_for_poll_interval(lab):
    server = lab.server(prefork.TCPServer, Commands)
    turned = []
    server.service_actions = lambda: turned.append(None)
    with serving(server, poll_interval=LONG_POLL):
        assert exchange(lab.client(server), b"echo first\n") == b"echo:first\n"
        wait_for(lambda: turned, message="the loop to finish its turn")  # now back in select()
        started = time.monotonic()
        assert Background(server.shutdown).done(within=PROMPT), "shutdown() waited for poll_interval"
        assert time.monotonic() - started < PROMPT


def test_shutdown_from_a_handler_in_the_serving_thread(lab):
    server = lab.server(prefork.TCPServer, Commands)
    loop = Background(server.serve_forever, LONG_POLL)
    assert exchange(lab.client(server), b"shutdown\n") == b"stopping\n"
    assert loop.done(within=PROMPT), "serve_forever() did not stop (shutdown() deadlocked?)"


SIGNALLED_SERVER = """
import signal, prefork

class Echo(prefork.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())

server = prefork.TCPServer(("127.0.0.1", 0), Echo)
signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
print("serving on", server.server_address[1], flush=True)
server.serve_forever(poll_interval=%d)
server.server_close()
print("stopped", flush=True)
""" % LONG_POLL


def test_shutdown_from_a_signal_handler_stops_the_loop_at_once(spawn):
    process = spawn([PYTHON, "-c", SIGNALLED_SERVER])
    port = int(process.readline_until(lambda line: line.startswith("serving on")).split()[-1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        assert exchange(client, b"ping\n") == b"ping\n"
    wait_for(lambda: is_sleeping(process.pid), message="the server to wait in select()")
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=PROMPT + 3) == 0
    assert time.monotonic() - started < PROMPT
    assert "stopped" in process.output()


# -- 2. a shared listener ------------------------------------------------------------

def take_request(listener):
    """Do what another process sharing the listener would: take the pending request."""
    if listener.type == socket.SOCK_STREAM:
        listener.accept()[0].close()
    else:
        listener.recv(65536)


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_request_taken_by_another_process_does_not_block(lab, server_class):
    server = lab.server(server_class)
    # The same open listener, as a sibling worker holds it (no flag changes: they're shared).
    with socket.socket(fileno=os.dup(server.fileno())) as sibling:
        lab.client(server).sendall(b"first\n")
        assert select.select([server], [], [], 5)[0], "the request never arrived"
        take_request(sibling)
        assert Background(server._handle_request_noblock).done(within=PROMPT), \
            "blocked on a request another process took"
    assert server.handled == []
    client = lab.client(server)
    client.sendall(b"second\n")
    server.handle_request()
    assert recv_reply(client) == b"echo:second\n"


def fork_worker(server, ready_fd):
    """Fork a child that serves on server until SIGTERM; it writes a byte to
    ready_fd once its SIGTERM handler is installed, and exits 0 after a clean stop."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
        os.write(ready_fd, b"!")
        server.serve_forever(poll_interval=LONG_POLL)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


@contextlib.contextmanager
def forked_workers(server, count):
    """count children serving on server; those the test did not reap are killed and reaped."""
    ready_r, ready_w = os.pipe()
    pids = set()
    try:
        for _ in range(count):
            pids.add(fork_worker(server, ready_w))
        for _ in range(count):
            assert select.select([ready_r], [], [], 5)[0], "a worker did not start"
            os.read(ready_r, 1)
        yield pids
    finally:
        os.close(ready_r)
        os.close(ready_w)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def reap(pid, within):
    """The exit code of child pid, waiting at most within seconds (None if still running)."""
    deadline = time.monotonic() + within
    while not (status := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return os.waitstatus_to_exitcode(status[1])


def test_forked_workers_share_one_listener_and_stop_on_sigterm(lab):
    server = lab.server(prefork.TCPServer, Commands, request_queue_size=64)
    with forked_workers(server, 3) as workers:
        clients = [lab.client(server) for _ in range(50)]
        for client in clients:
            client.sendall(b"pid\n")
        for client in clients:
            assert int(recv_all(client)) in workers
        for pid in workers:
            wait_for(lambda pid=pid: is_sleeping(pid), message=f"worker {pid} to wait in select()")
        started = time.monotonic()
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        exit_codes = {pid: reap(pid, within=PROMPT) for pid in workers}
        workers -= {pid for pid, code in exit_codes.items() if code is not None}
        assert list(exit_codes.values()) == [0, 0, 0]
        assert time.monotonic() - started < PROMPT


# -- 3. ThreadingMixIn.max_threads ---------------------------------------------------

def test_max_threads_leaves_extra_connections_in_the_kernel_queue(lab):
    server = lab.server(prefork.ThreadingTCPServer, Commands, max_threads=2)
    with serving(server, poll_interval=LONG_POLL):
        first, second, third = hold(lab, server, 3)
        assert recv_line(first) == recv_line(second) == b"holding\n"
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):  # its handler never starts while two run
            third.recv(1)
        assert len(server.handled) == 2
        assert select.select([server.socket], [], [], 0)[0]  # still queued in the listener
        release(first)
        third.settimeout(PROMPT)
        assert recv_line(third) == b"holding\n"  # accepted at once, not after poll_interval
        assert len(server.handled) == 3
        release(second)
        release(third)


def test_max_threads_none_is_unbounded(lab):
    server = lab.server(prefork.ThreadingTCPServer, Commands, request_queue_size=16)
    assert server.max_threads is None
    with serving(server, poll_interval=0.05):
        clients = hold(lab, server, 8)
        for client in clients:  # all eight run at once
            assert recv_line(client) == b"holding\n"
        for client in clients:
            release(client)
