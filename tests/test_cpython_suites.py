"""CPython's own tests, run on prefork: the drop-in promise judged by the
standard library's suites for socketserver and the servers built on it.

Each suite runs in a subprocess (tests/cpython/run_suite.py) that makes
prefork the ``socketserver`` before http.server, xmlrpc.server or wsgiref is
imported, and checks that their servers are prefork's.  The suites are the
interpreter's own ``test`` package, so they are those of its version.

The interpreters: $PREFORK_PYTHONS, paths separated by spaces (default: the
one running pytest); each needs prefork importable (PYTHONPATH is set to this
checkout) and setproctitle installed.  -s or -rP shows each suite's counts.

Below the suites, the behaviours they showed prefork lacked, tested directly.
"""

import json
import os
import select
import signal
import socket
import socketserver as stdlib_socketserver
import subprocess
import sys
import threading
import time
import weakref

import pytest

import prefork
from support import ROOT, Background, class_id, wait_for

RUNNER = os.path.join(ROOT, "tests", "cpython", "run_suite.py")
NO_SUITE = 4          # run_suite.py's exit status when the interpreter has no such suite
TEST_TIMEOUT = 30     # seconds any one test of a suite may take

# Seconds each suite may take as a whole.  test_xmlrpc needs about 30: nine of
# its tests wait out the 3 s timeout the suite gives its server's listener.
SUITES = {
    "test.test_socketserver": 60,
    "test.test_httpservers": 60,
    "test.test_xmlrpc": 120,
    "test.test_wsgiref": 60,
}

# Tests of the standard library module's private internals (or of its source
# file's own bookkeeping): not part of the drop-in promise.  Each is checked
# here or elsewhere through the public interface instead.
EXCLUDED = {
    "test.test_socketserver.MiscTestCase.test_threads_reaped":
        "reads ThreadingMixIn._threads, the stdlib's private list of request "
        "threads; prefork's ThreadingMixIn keeps its own (_threads_in_flight). "
        "test_finished_request_threads_are_not_kept checks its promise",
    "test.test_socketserver.MiscTestCase.test_all":
        "expects __all__ to list exactly the names whose __module__ is "
        "'socketserver', i.e. defined in the stdlib's file; prefork's classes are "
        "defined in prefork.*. test_socketserver_classes.py::"
        "test_every_stdlib_name_is_exported checks the drop-in's version",
}


def interpreters():
    """A pytest.param of the path of each interpreter to run the suites with,
    its version for id."""
    paths = os.environ.get("PREFORK_PYTHONS", "").split() or [sys.executable]
    found = []
    for path in paths:
        version = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        found.append(pytest.param(path, id=version))
    return found


def run_suite(python, suite, limit, cwd):
    """Run the suite in its own process group; return (exit status, output).

    Past `limit` seconds the group is killed.  Either way nothing it started
    may outlive it: leftovers are killed and reported.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    args = [python, RUNNER, suite, "--test-timeout", str(TEST_TIMEOUT)]
    for test_id in EXCLUDED:
        if test_id.startswith(suite + "."):
            args += ["--exclude", test_id]
    process = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{suite} took over {limit} s:\n{output[-5000:]}")
    finally:
        leftovers = _kill_group(process.pid)
    assert not leftovers, f"{suite} left processes behind:\n{output[-5000:]}"
    return process.returncode, output


def _kill_group(pgid):
    """Kill what is left of the process group; whether anything was."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("python", interpreters())
@pytest.mark.parametrize("suite", [
    # pytest-timeout's limit leaves run_suite() the time to kill the suite's processes.
    pytest.param(suite, marks=pytest.mark.timeout(limit + 30)) for suite, limit in SUITES.items()
])
def test_cpython_suite_passes_on_prefork(python, suite, tmp_path):
    status, output = run_suite(python, suite, SUITES[suite], cwd=tmp_path)
    if status == NO_SUITE:
        pytest.skip(output.strip())
    summaries = [line for line in output.splitlines() if line.startswith("SUMMARY ")]
    assert summaries, f"{suite} did not finish (a test over {TEST_TIMEOUT} s?):\n{output[-5000:]}"
    summary = json.loads(summaries[-1].removeprefix("SUMMARY "))
    print(f"{suite} on Python {summary['python']}: {summary['run']} run, "
          f"{summary['passed']} passed, {summary['skipped']} skipped, "
          f"{len(summary['excluded'])} excluded"
          + "".join(f"; {test_id} absent here" for test_id in summary["excluded_absent"]))
    assert status == 0, f"{suite} failed {summary['failed']}:\n{output[-20000:]}"
    assert summary["passed"] > 0


# -- what the suites rely on, tested directly ----------------------------------------

STREAM_SERVERS = [prefork.TCPServer, prefork.UnixStreamServer]


def activate_with_listener_timeout(lab, server_class, listener_timeout, **class_attrs):
    """A server whose listener was given a timeout before server_activate(),
    as CPython's xmlrpc tests do; handle_timeout() appends to server.timeouts."""
    server = lab.server(server_class, bind_and_activate=False, **class_attrs)
    server.socket.settimeout(listener_timeout)
    server.server_bind()
    server.server_activate()
    server.timeouts = []
    server.handle_timeout = lambda: server.timeouts.append(time.monotonic())
    return server


@pytest.mark.parametrize("listener_timeout, server_timeout", [
    (0.2, None), (0.2, 5.0), (5.0, 0.2),
], ids=["listener", "listener-shorter", "server.timeout-shorter"])
@pytest.mark.parametrize("server_class", STREAM_SERVERS, ids=class_id)
def test_handle_request_keeps_the_listener_timeout_set_before_activation(
        lab, server_class, listener_timeout, server_timeout):
    server = activate_with_listener_timeout(lab, server_class, listener_timeout,
                                            timeout=server_timeout)
    started = time.monotonic()
    waiting = Background(server.handle_request)
    returned = waiting.done(within=10)
    if not returned:
        lab.client(server).close()  # a request (at EOF at once) ends the wait
        waiting.done(within=10)
    assert returned, "handle_request() did not time out"
    assert len(server.timeouts) == 1
    assert 0.15 < server.timeouts[0] - started < 3
    assert server.handled == []


@pytest.mark.parametrize("server_class", STREAM_SERVERS, ids=class_id)
def test_handle_request_with_a_listener_timeout_still_serves(lab, server_class):
    server = activate_with_listener_timeout(lab, server_class, 5.0)
    client = lab.client(server)
    client.sendall(b"served\n")
    server.handle_request()
    assert server.handled and server.timeouts == []
    assert client.recv(100) == b"echo:served\n"


@pytest.mark.parametrize("server_class", STREAM_SERVERS, ids=class_id)
def test_a_listener_timeout_does_not_make_accept_wait(lab, server_class):
    # Another process sharing the listener may take the connection first: then
    # accept() must say so at once, not wait out the timeout for the next one.
    server = activate_with_listener_timeout(lab, server_class, 5.0)
    started = time.monotonic()
    with pytest.raises(BlockingIOError):
        server.get_request()
    assert time.monotonic() - started < 1


def accepted_socket_timeout(module, default_timeout, listener_timeout):
    """gettimeout() of a connection accepted by module.TCPServer, its listener
    given listener_timeout before activation, with socket's default timeout set."""
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(default_timeout)
    try:
        server = module.TCPServer(("127.0.0.1", 0), module.BaseRequestHandler,
                                  bind_and_activate=False)
        with server:
            if listener_timeout != "unset":
                server.socket.settimeout(listener_timeout)
            server.server_bind()
            server.server_activate()
            with socket.create_connection(server.server_address, timeout=5):
                assert select.select([server], [], [], 5)[0], "no connection to accept"
                request, _ = server.get_request()
                with request:
                    return request.gettimeout()
    finally:
        socket.setdefaulttimeout(saved)


@pytest.mark.parametrize("listener_timeout", ["unset", None, 3.0])
@pytest.mark.parametrize("default_timeout", [None, 4.0])
def test_accepted_sockets_get_the_timeout_the_stdlib_gives(default_timeout, listener_timeout):
    accepted = accepted_socket_timeout(prefork, default_timeout, listener_timeout)
    assert accepted == accepted_socket_timeout(stdlib_socketserver, default_timeout,
                                               listener_timeout)
    assert accepted == default_timeout


def test_finished_request_threads_are_not_kept(lab):
    # test_threads_reaped's promise (bpo-37193: a server kept every request
    # thread it started), checked without ThreadingMixIn's private attributes.
    threads = []

    class Handler(prefork.StreamRequestHandler):
        def handle(self):
            threads.append(weakref.ref(threading.current_thread()))

    server = lab.server(prefork.ThreadingTCPServer, Handler)
    for _ in range(10):
        with socket.create_connection(server.server_address, timeout=5):
            server.handle_request()
    wait_for(lambda: len(threads) == 10 and not any(t() and t().is_alive() for t in threads),
             message="the ten requests to finish")
    assert sum(t() is not None for t in threads) < 10
