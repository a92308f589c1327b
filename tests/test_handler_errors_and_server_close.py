"""Errors in handlers (handle_error, BaseException, a forked child's exit code)
and what server_close() waits for (block_on_close, daemon_threads, reaping
ForkingMixIn children, max_children): the stdlib's semantics for synchronous,
threading and forking servers, in-process."""

import os
import threading
import time
import types

import pytest

import prefork
from support import (
    FORK_WARNING, Background, Commands, hold, live_children, recv_all, recv_line, release,
    serving, wait_for)

pytestmark = pytest.mark.filterwarnings(FORK_WARNING)

SERVERS = {
    "sync": prefork.TCPServer,
    "threading": prefork.ThreadingTCPServer,
    "forking": prefork.ForkingTCPServer,
}


class Abort(BaseException):
    """Not an Exception: handle_error must not swallow it."""


def command_server(lab, server_class, **class_attrs):
    return lab.server(server_class, Commands, **class_attrs)


def send_command(lab, server, command):
    """Connect, send one command and let the server take the request."""
    client = lab.client(server)
    client.sendall(command + b"\n")
    server.handle_request()
    return client


def start_held_request(lab, server):
    """A request whose handler runs until the client sends another line."""
    client = send_command(lab, server, b"hold")
    assert recv_line(client) == b"holding\n"
    return client


def exit_code(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def has_exited(pid):
    """Whether the child has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def running_requests(server):
    """Request threads still alive, or forked children not yet reaped."""
    if isinstance(server, prefork.ForkingMixIn):
        return len(server.active_children)
    return sum(thread.is_alive() for thread in server.handled)


# -- errors in handle() --------------------------------------------------------

@pytest.mark.parametrize("mode", SERVERS)
def test_exception_in_handle_goes_to_handle_error_and_serving_goes_on(lab, capfd, mode):
    server = command_server(lab, SERVERS[mode])
    failing = send_command(lab, server, b"raise")
    assert recv_all(failing) == b""  # the request was closed
    served = send_command(lab, server, b"echo still here")
    assert recv_all(served) == b"echo:still here\n"
    server.server_close()  # waits for the thread or child, and its traceback
    err = capfd.readouterr().err
    assert err.count("Exception occurred during processing of request from") == 1
    assert str(failing.getsockname()) in err  # handle_error got the client address
    assert "Traceback (most recent call last)" in err
    assert "ValueError: handler failed on purpose" in err


@pytest.mark.parametrize("exception", [Abort, SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("serve", [
    pytest.param(lambda server: server.handle_request(), id="handle_request"),
    pytest.param(lambda server: server.serve_forever(poll_interval=0.01), id="serve_forever"),
])
def test_base_exception_closes_the_request_and_propagates(lab, serve, exception):
    server = command_server(lab, prefork.TCPServer)
    server.abort_with = exception
    errors = []
    server.handle_error = lambda request, client_address: errors.append(client_address)
    client = lab.client(server)
    client.sendall(b"abort\n")
    with pytest.raises(exception):
        serve(server)
    assert recv_all(client) == b""
    assert errors == []


@pytest.mark.parametrize("command, status", [(b"echo ok", 0), (b"raise", 1)])
def test_forked_child_exits_0_on_success_and_1_on_error(lab, command, status):
    server = command_server(lab, prefork.ForkingTCPServer)
    client = send_command(lab, server, command)
    (pid,) = server.active_children
    recv_all(client)
    assert exit_code(pid) == status
    server.active_children.discard(pid)


# -- server_close() --------------------------------------------------------------

@pytest.mark.parametrize("server_class", [prefork.ThreadingTCPServer, prefork.ForkingTCPServer],
                         ids=["threading", "forking"])
def test_server_close_waits_for_running_requests(lab, server_class):
    server = command_server(lab, server_class)
    assert server.block_on_close is True
    client = start_held_request(lab, server)
    closing = Background(server.server_close)
    assert not closing.done(within=0.3), "server_close() did not wait for the request"
    release(client)
    assert closing.done(within=5)
    assert running_requests(server) == 0


@pytest.mark.parametrize("server_class, attrs", [
    (prefork.ThreadingTCPServer, {"block_on_close": False}),
    (prefork.ThreadingTCPServer, {"daemon_threads": True}),
    (prefork.ForkingTCPServer, {"block_on_close": False}),
], ids=["threading-no-block", "threading-daemon", "forking-no-block"])
def test_server_close_returns_while_requests_run(lab, server_class, attrs):
    server = command_server(lab, server_class, **attrs)
    client = start_held_request(lab, server)
    assert Background(server.server_close).done(within=2), "server_close() waited"
    release(client)  # the handler was still running: it answers now
    if isinstance(server, prefork.ForkingMixIn):
        (pid,) = server.active_children
        assert exit_code(pid) == 0
        server.active_children.discard(pid)
    else:
        (thread,) = server.handled
        assert thread.daemon is server.daemon_threads
        thread.join(5)
        assert not thread.is_alive()


@pytest.mark.parametrize("daemon_threads", [False, True])
def test_request_threads_are_daemons_as_configured(lab, daemon_threads):
    server = command_server(lab, prefork.ThreadingTCPServer, daemon_threads=daemon_threads)
    assert recv_all(send_command(lab, server, b"echo x")) == b"echo:x\n"
    (thread,) = server.handled
    assert thread.daemon is daemon_threads


def threads_held_by(root):
    """Thread objects reachable from root through instance attributes and containers."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, threading.Thread):
            found.append(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType)):
            stack.extend(vars(obj).values())
    return found


def test_threading_server_forgets_finished_threads(lab):
    server = command_server(lab, prefork.ThreadingTCPServer)
    baseline = threading.active_count()
    with serving(server, poll_interval=0.05):
        for n in range(200):
            with lab.client(server) as client:
                client.sendall(b"echo %d\n" % n)
                assert recv_all(client) == b"echo:%d\n" % n
        wait_for(lambda: threading.active_count() <= baseline + 1, message="threads to end")
        server.handled.clear()  # the test's own record of the threads
        assert threads_held_by(server) == []
    started = time.monotonic()
    server.server_close()
    assert time.monotonic() - started < 1


# -- ForkingMixIn reaping --------------------------------------------------------

def test_max_children_bounds_the_live_children(lab):
    server = command_server(lab, prefork.ForkingTCPServer, max_children=2)
    with serving(server, poll_interval=0.05):
        first, second, third = hold(lab, server, 3)
        assert recv_line(first) == recv_line(second) == b"holding\n"
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):  # not forked while two children run
            third.recv(1)
        assert len(live_children()) == 2
        release(first)
        third.settimeout(5)
        assert recv_line(third) == b"holding\n"  # served once the first child exited
        assert len(server.active_children) <= 2
        assert len(live_children()) <= 2
        release(second)
        release(third)


def test_collect_children_blocking_reaps_them_all(lab):
    server = command_server(lab, prefork.ForkingTCPServer)
    clients = [start_held_request(lab, server) for _ in range(3)]
    pids = set(server.active_children)
    assert len(pids) == 3
    server.collect_children()
    assert server.active_children == pids  # all still running: none reaped
    for client in clients:
        client.sendall(b"go\n")
    server.collect_children(blocking=True)
    assert not server.active_children
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_forking_handle_timeout_reaps_children(lab):
    server = command_server(lab, prefork.ForkingTCPServer, timeout=0.2)
    client = send_command(lab, server, b"echo bye")
    (pid,) = server.active_children
    assert recv_all(client) == b"echo:bye\n"
    wait_for(lambda: has_exited(pid), message="the child to exit")
    server.handle_request()  # no request comes: handle_timeout()
    assert not server.active_children
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
