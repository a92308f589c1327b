"""ThreadingMixIn's thread pool: reuse_threads (request threads kept alive to
serve later requests), max_threads bounding a pool, and inline_quick_requests
(quick requests run in the loop's own thread, with a watcher for stalls)."""

import socket
import threading
import time

import pytest

import prefork
from support import recv_line, request, serving, wait_for


class ThreadName(prefork.StreamRequestHandler):
    """Answers a line: the name of the thread that handled the request; a request
    "wait" first blocks until the test sets the server's `release` event,
    a request "slow" takes 50 ms."""

    def handle(self):
        command = self.rfile.readline().strip()
        if command == b"wait":
            self.server.waiting.release()
            self.server.release.wait(10)
        elif command == b"slow":
            time.sleep(0.05)
        self.wfile.write(threading.current_thread().name.encode() + b"\n")


class PoolServer(prefork.ThreadingMixIn, prefork.TCPServer):
    reuse_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Semaphore(0)
        self.release = threading.Event()


def served_by(server, command="hi"):
    """The name of the thread that handled `command` on a new connection."""
    return request(server.server_address, command)


def thread_name(client):
    """The thread name a ThreadName handler answers on client's connection."""
    return recv_line(client).decode().rstrip("\n")


def open_waiting(server, count):
    """count connections whose requests block in their handler until release."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(server.server_address, timeout=5)
        client.sendall(b"wait\n")
        clients.append(client)
    for _ in range(count):
        assert server.waiting.acquire(timeout=5)
    return clients


def test_sequential_requests_reuse_threads():
    with serving(PoolServer(("127.0.0.1", 0), ThreadName)) as server:
        names = {served_by(server) for _ in range(20)}
    # The reply reaches the client just before its thread is idle again, so the
    # next request may find none idle and start a second thread; on a loaded
    # machine the first may still not be idle when the third comes.  Without
    # reuse, each of the 20 requests has a thread of its own.
    assert len(names) <= 3


def test_without_reuse_each_request_has_its_own_thread():
    server = PoolServer(("127.0.0.1", 0), ThreadName)
    server.reuse_threads = False
    with serving(server):
        names = {served_by(server) for _ in range(5)}
    assert len(names) == 5


def test_pool_grows_to_the_concurrency_then_reuses():
    with serving(PoolServer(("127.0.0.1", 0), ThreadName)) as server:
        clients = open_waiting(server, 3)
        server.release.set()
        busy_names = {thread_name(client) for client in clients}
        for client in clients:
            client.close()
        later_names = {served_by(server) for _ in range(10)}
    assert len(busy_names) == 3
    assert len(later_names - busy_names) <= 1  # reused (one more at most: see above)


@pytest.mark.parametrize("block_on_close", [True, False])
def test_server_close_lets_pooled_threads_go(block_on_close):
    baseline = threading.active_count()
    server = PoolServer(("127.0.0.1", 0), ThreadName)
    server.block_on_close = block_on_close
    with serving(server):
        for client in open_waiting(server, 2):
            client.close()
        server.release.set()
    # serving() has called server_close(): with block_on_close it joined them.
    if block_on_close:
        assert threading.active_count() == baseline
    wait_for(lambda: threading.active_count() == baseline, message="pooled threads to exit")


def test_max_threads_bounds_a_pool():
    server = PoolServer(("127.0.0.1", 0), ThreadName)
    server.max_threads = 2
    with serving(server):
        clients = open_waiting(server, 2)
        third = socket.create_connection(server.server_address, timeout=5)
        third.sendall(b"hi\n")
        third.settimeout(0.3)
        with pytest.raises(socket.timeout):
            third.recv(100)  # not accepted while both threads are busy
        server.release.set()
        third.settimeout(5)
        assert third.recv(100)
        for client in clients + [third]:
            client.close()


class InlineServer(PoolServer):
    inline_quick_requests = True


def serving_thread_name(server):
    """The name of the thread running serve_forever() (support.serving starts it)."""
    return next(t.name for t in threading.enumerate()
                if getattr(t, "_target", None) == server.serve_forever)


def test_quick_requests_run_in_the_loops_own_thread():
    with serving(InlineServer(("127.0.0.1", 0), ThreadName)) as server:
        names = {served_by(server) for _ in range(10)}
        assert names == {serving_thread_name(server)}


def test_a_stalled_inline_request_does_not_stop_the_server():
    """The first request blocks in the loop's thread; the watcher accepts the
    next ones in its place and hands them to threads."""
    with serving(InlineServer(("127.0.0.1", 0), ThreadName)) as server:
        (stalled,) = open_waiting(server, 1)
        loop_thread = serving_thread_name(server)
        assert served_by(server) != loop_thread  # served meanwhile, by another thread
        server.release.set()
        assert thread_name(stalled) == loop_thread
        stalled.close()


def test_slow_requests_go_to_threads():
    with serving(InlineServer(("127.0.0.1", 0), ThreadName)) as server:
        served_by(server, "slow")  # 50 ms: lifts the recent average past "quick"
        assert served_by(server) != serving_thread_name(server)


def test_the_watcher_sleeps_when_no_request_runs_inline():
    with serving(InlineServer(("127.0.0.1", 0), ThreadName)) as server:
        served_by(server)
        threads = server._request_threads()
        wait_for(lambda: threads._watcher_sleeping, message="the watcher to sleep")
        assert served_by(server)  # and wakes for the next inline request
