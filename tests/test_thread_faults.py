"""A request ended by a BaseException that is not an Exception (sys.exit(), say)
in a threading server: as in the stdlib, it ends that request's thread only --
also when the thread is a pooled one (reuse_threads) or the serve loop's own
(inline_quick_requests) -- and the server goes on serving."""

import socket
import sys
import threading

import pytest

import prefork
from support import CLIENT_TIMEOUT, Background, request, serving, wait_for

pytestmark = pytest.mark.timeout(30)


class Abort(BaseException):
    """Not an Exception: ends the thread, and threading.excepthook reports it."""


class Faulty(prefork.StreamRequestHandler):
    """One command a request: "exit" calls sys.exit(), "abort" raises Abort,
    "interrupt" raises KeyboardInterrupt, "fail" raises ValueError, "wait"
    blocks until the server's `release` is set; then, and for anything else,
    the answer is "ok".  server.handler_threads records each request's thread."""

    def handle(self):
        self.server.handler_threads.append(threading.current_thread())
        command = self.rfile.readline().strip()
        if command == b"exit":
            sys.exit()
        if command == b"abort":
            raise Abort
        if command == b"interrupt":
            raise KeyboardInterrupt
        if command == b"fail":
            raise ValueError("failed on purpose")
        if command == b"wait":
            self.server.waiting.release()
            self.server.release.wait(10)
        self.wfile.write(b"ok\n")


class FaultServer(prefork.ThreadingMixIn, prefork.TCPServer):
    """A pooled threading server that records what reaches handle_error()."""

    reuse_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handler_threads = []
        self.errors = []
        self.waiting = threading.Semaphore(0)
        self.release = threading.Event()

    def handle_error(self, request, client_address):
        self.errors.append(sys.exc_info()[0])


def fault_server(**attrs):
    server = FaultServer(("127.0.0.1", 0), Faulty)
    vars(server).update(attrs)
    return server


def ask(server, command="hi"):
    """The answer to one command; "" if the server closed the connection unanswered."""
    return request(server.server_address, command)


def settled(server):
    """Wait until no request is counted as running: each finished() is done."""
    threads = server._request_threads()
    wait_for(lambda: threads.running == 0, timeout=5, message="the requests to be counted done")
    return threads


def loop_thread_of(server):
    """The thread running serve_forever() (support.serving starts it)."""
    return next(thread for thread in threading.enumerate()
                if getattr(thread, "_target", None) == server.serve_forever)


@pytest.fixture
def thread_excepthook(monkeypatch):
    """The (exc_type, thread) of each threading.excepthook call, which then does
    what the default hook does: print a traceback, unless it is a SystemExit."""
    calls = []

    def hook(args):
        calls.append((args.exc_type, args.thread))
        threading.__excepthook__(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    return calls


def assert_reported_as_threading_would(err, exception, thread):
    if exception is SystemExit:
        assert err == ""
    else:
        assert f"Exception in thread {thread.name}" in err
        assert exception.__name__ in err


FAULTS = [
    pytest.param("exit", SystemExit, id="sys.exit"),
    pytest.param("abort", Abort, id="BaseException"),
]
BOUNDS = [pytest.param(None, id="unbounded"), pytest.param(1, id="max_threads=1")]


@pytest.mark.parametrize("max_threads", BOUNDS)
@pytest.mark.parametrize("command, exception", FAULTS + [
    pytest.param("interrupt", KeyboardInterrupt, id="KeyboardInterrupt")])
def test_a_pooled_thread_ended_by_a_base_exception_leaves_the_pool(
        thread_excepthook, capfd, command, exception, max_threads):
    server = fault_server(max_threads=max_threads)
    with serving(server):
        assert ask(server, command) == ""  # closed, unanswered
        (ended,) = server.handler_threads
        ended.join(5)
        assert not ended.is_alive()
        settled(server)
        for _ in range(5):
            assert ask(server) == "ok"
        threads = settled(server)
        pool = {thread for thread in server.handler_threads if thread.is_alive()}
        assert ended not in pool
        assert threads._pooled == threads._idle == len(pool) >= 1
        assert server._accepting_requests()
    # serving() has called server_close(): it joined the pool (block_on_close).
    assert not any(thread.is_alive() for thread in server.handler_threads)
    assert thread_excepthook == [(exception, ended)]
    assert_reported_as_threading_would(capfd.readouterr().err, exception, ended)
    assert server.errors == []


@pytest.mark.parametrize("max_threads", BOUNDS)
@pytest.mark.parametrize("command, exception", FAULTS)
def test_an_inline_request_ended_by_a_base_exception_ends_only_itself(
        thread_excepthook, capfd, command, exception, max_threads):
    server = fault_server(inline_quick_requests=True, max_threads=max_threads)
    with serving(server):
        loop_thread = loop_thread_of(server)
        assert ask(server, command) == ""  # closed, unanswered
        assert server.handler_threads == [loop_thread]  # it ran inline
        assert loop_thread.is_alive()
        for _ in range(5):
            assert ask(server) == "ok"
        threads = settled(server)
        assert server._accepting_requests()
        assert threads._pooled == threads._idle
    assert thread_excepthook == [(exception, loop_thread)]
    assert_reported_as_threading_would(capfd.readouterr().err, exception, loop_thread)
    assert server.errors == []


def test_keyboard_interrupt_in_an_inline_request_stops_serve_forever():
    """Ctrl-C during an inline request reaches the loop's thread, as it would
    with the request in a thread of its own."""
    server = fault_server(inline_quick_requests=True)
    raised = []

    def serve():
        try:
            server.serve_forever()
        except BaseException as error:
            raised.append(type(error))

    loop_thread = threading.Thread(target=serve)
    loop_thread.start()
    try:
        assert ask(server, "interrupt") == ""  # closed, unanswered
        loop_thread.join(5)
        assert not loop_thread.is_alive()
        assert raised == [KeyboardInterrupt]
        assert server.handler_threads == [loop_thread]
    finally:
        server.shutdown()
        loop_thread.join(5)
        server.server_close()


@pytest.mark.parametrize("inline", [False, True], ids=["pooled", "inline"])
def test_an_exception_still_goes_to_handle_error_and_the_thread_serves_on(inline):
    server = fault_server(inline_quick_requests=inline)
    with serving(server):
        assert ask(server, "fail") == ""
        settled(server)
        assert ask(server) == "ok"
        threads = settled(server)
        failed_in, served_by = server.handler_threads
        assert failed_in.is_alive()
        if inline:
            assert failed_in is loop_thread_of(server)
        else:
            assert served_by is failed_in  # kept in the pool, handed the next request
        assert threads._pooled == threads._idle
    assert server.errors == [ValueError]


@pytest.mark.parametrize("daemon_threads", [False, True])
def test_server_close_after_a_fault_waits_for_the_pool_as_configured(
        thread_excepthook, daemon_threads):
    server = fault_server(daemon_threads=daemon_threads)
    with serving(server):
        assert ask(server, "exit") == ""
        settled(server)
        with socket.create_connection(server.server_address, CLIENT_TIMEOUT) as held:
            held.sendall(b"wait\n")
            assert server.waiting.acquire(timeout=5)
            holder = server.handler_threads[-1]
            assert holder.daemon is daemon_threads
            server.shutdown()
            closing = Background(server.server_close)
            if not daemon_threads:
                assert not closing.done(within=0.3), "server_close() did not wait"
            server.release.set()
            assert closing.done(within=5)
            assert held.recv(100) == b"ok\n"
        holder.join(5)
        assert not holder.is_alive()
