"""How the prefork master supervises its workers, and what they serve: real
processes, real signals, real sockets.

Every server here is tests/apps/serve.py run as its own process (the `spawn`
fixture stops and reaps it), answering tests/apps/commands.py:
"echo WORDS" -> "<pid> <generation> WORDS", "hang", "grow MIB".

1. A worker SIGKILLed under load is replaced within 1 s; only its own request fails.
2. A hanging request is killed by request_timeout and its worker replaced.
3. A worker that cannot boot: back-off, one clear error, exit 2 -- no fork loop.
4. A SIGKILLed master's workers leave on their own; the port is free again.
5-6. max_requests and max_worker_memory recycle workers.
7. Every family (TCP, UDP, Unix stream, Unix datagram) x every worker mix-in.
8. Over the standard library's http.server.ThreadingHTTPServer.
9-10. reuse_port; the listen backlog.
11. No zombies: after every kill and recycle, the master has reaped its children.
"""

import collections
import contextlib
import datetime
import http.client
import os
import re
import signal
import socket
import threading
from time import monotonic

import psutil
import pytest

import prefork
from support import (
    CLIENT_TIMEOUT, Load, assert_no_zombies, assert_tree_gone, children, datagram_client,
    echo, live_children, parse_reply, port_is_free, process_tree, request, start_app,
    start_booted, started_requests, stop_server, wait_for, wait_log, wait_replaced)


# -- 1. a worker SIGKILLed under load ---------------------------------------------------

def test_killed_worker_is_replaced_within_a_second_under_load(spawn):
    workers = 3
    process, address = start_booted(spawn, workers=workers)
    before = live_children(process.pid)
    assert len(before) == workers

    with Load(address, threads=2) as load:
        load.wait_for_replies(20, "the load to flow")
        victim = load.replies[-1].pid  # the worker that just answered: under load
        assert victim in before
        killed_at = monotonic()
        os.kill(victim, signal.SIGKILL)
        new = wait_replaced(process.pid, before, victim)
        replaced_in = monotonic() - killed_at
        load.wait_for_replies(50, "requests served after the kill")

    assert replaced_in < 1.0, f"replaced in {replaced_in:.3f}s"
    assert len(new) == 1
    # The shared listener's accept queue belongs to the master and the other
    # workers too, so connections still queued there are served by them.  What
    # the kill can lose is only what the victim had already accepted: a sync
    # worker accepts one connection at a time and finishes it before accepting
    # another, so it held at most 1 request -- and each client thread has at most
    # one request outstanding, so that is at most 1 failure in all.
    assert len(load.failures) <= 1, load.failures
    assert len(load.replies) >= 70
    assert_no_zombies(process.pid)
    stop_server(process)
    assert f"(pid {victim}) was killed by SIGKILL unexpectedly" in process.output()


# -- 2. a request that hangs ------------------------------------------------------------

# A sync worker busy with "hang" takes no other request: none of the load can
# fail.  A threading worker also serves the load while one of its threads
# hangs, so the one load thread may have one request in flight on it when killed.
@pytest.mark.parametrize("mixin, allowed_failures", [("sync", 0), ("threading", 1)])
def test_hanging_request_is_killed_by_request_timeout(spawn, mixin, allowed_failures):
    workers = 2
    process, address = start_booted(spawn, "--mixin", mixin, "--set", "request_timeout=1",
                                    workers=workers)
    before = live_children(process.pid)
    with Load(address, threads=1) as load:
        load.wait_for_replies(5, "the load to flow")
        served_before = len(load.replies)
        started = monotonic()  # a request's time runs from its accept()
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as hanging:
            hanging.sendall(b"hang\n")
            line = wait_log(process, "Killing worker", "past request_timeout")
            served_meanwhile = len(load.replies) - served_before
            # Its client sees the connection closed, unanswered.
            with contextlib.suppress(ConnectionResetError):
                assert hanging.recv(100) == b""
            hung_for = monotonic() - started

        victim = int(re.search(r"\(pid (\d+)\)", line).group(1))
        assert victim in before
        wait_replaced(process.pid, before, victim)
        load.wait_for_replies(20, "requests served after the kill")

    assert re.search(r"a request ran \d+\.\d+s", line), line
    assert 1.0 <= hung_for < CLIENT_TIMEOUT, hung_for
    assert served_meanwhile > 0, "no other request was served while one hung"
    assert len(load.failures) <= allowed_failures, load.failures
    assert_no_zombies(process.pid)
    stop_server(process)


# -- 3. a worker that cannot boot --------------------------------------------------------

LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def log_time(line):
    stamp = LOG_TIME.match(line).group(1)
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_boot_error_backs_off_then_stops_with_one_clear_error(spawn, tmp_path):
    attempts = 3
    log_file = tmp_path / "prefork.log"  # its timestamps have milliseconds
    process, _ = start_app(spawn, "--boot-error", "boom at boot", "--log-file", str(log_file),
                           "--set", "workers=1", "--set", f"boot_attempts={attempts}")
    assert process.wait() == prefork.ExitStatus.BOOT_ERROR == 3
    output = process.output()
    boot_error = [line for line in output.splitlines() if line.startswith("BOOT ERROR")]
    assert len(boot_error) == 1 and "boom at boot" in boot_error[0], output
    assert "Traceback" not in output, output

    log = log_file.read_text().splitlines()
    failures = [line for line in log if "failed to boot" in line and "Giving up" not in line]
    # One fork per attempt, each logged: no more forks than boot_attempts.
    assert len(failures) == attempts, log
    assert not [line for line in log if "Booted worker" in line], log
    # The error itself is logged once, in full, then only counted.
    first = f"failed to boot (attempt 1 of {attempts}): RuntimeError: boom at boot"
    assert len([line for line in log if "RuntimeError: boom at boot" in line
                and "Giving up" not in line]) == 1
    assert first in failures[0], log
    # ... with where, in the user's code, it was raised: file, line and the line itself.
    assert re.search(r"\(at .*serve\.py, line \d+: raise RuntimeError\(boot_error\)\)",
                     failures[0]), failures[0]
    # Later attempts are numbered: never mistaken for other workers.
    assert [f"(attempt {n} of {attempts})" in line for n, line in
            enumerate(failures, 1)] == [True] * attempts, failures
    # Back-off: 0.1 s after the first failure, 0.2 s after the second.
    gaps = [b - a for a, b in zip(map(log_time, failures), map(log_time, failures[1:]))]
    assert gaps[0] >= 0.095 and gaps[1] >= 0.195, gaps


# -- 4. the master SIGKILLed ---------------------------------------------------------------

@pytest.mark.parametrize("mixin", ["sync", "threading", "forking"])
def test_workers_exit_when_the_master_is_killed(spawn, started_file, mixin):
    path, env = started_file
    process, address = start_booted(spawn, "--mixin", mixin, workers=2, env=env)
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as slow:
        slow.sendall(b"sleep 1\n")
        started_requests(path, 1)  # the request reached its handler
        tree = process_tree(process.pid)[1:]  # the workers (and a forking one's child)
        assert len(tree) >= 2

        killed_at = monotonic()
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        # The request in flight still completes; then its worker leaves too.
        with slow.makefile("rb") as reply:
            assert reply.readline().endswith(b" slept\n")
    assert_tree_gone(tree, timeout=5)  # the workers of a dead master exit
    assert monotonic() - killed_at < 5
    assert port_is_free(address)  # nothing listens on the port any more


# -- 5-6. recycling -------------------------------------------------------------------------

def test_max_requests_recycles_workers(spawn):
    process, address = start_booted(spawn, "--set", "max_requests=5", workers=1)
    pids = collections.Counter(echo(address, f"request {i}").pid for i in range(12))
    assert len(pids) >= 2, pids
    assert max(pids.values()) <= 5, pids  # none served past its max_requests
    assert_no_zombies(process.pid)
    stop_server(process)


def worker_rss_baseline(spawn):
    """The RSS of a worker of serve.py that has served a request, as psutil sees it."""
    process, address = start_booted(spawn, workers=1)
    rss = psutil.Process(echo(address).pid).memory_info().rss
    stop_server(process)
    return rss


def test_max_worker_memory_recycles_a_growing_worker(spawn):
    limit = worker_rss_baseline(spawn) + (50 << 20)
    process, address = start_booted(spawn, "--set", f"max_worker_memory={limit}", workers=1)
    first = echo(address).pid
    assert request(address, "grow 80") == f"{first} grew"

    line = wait_log(process, "stopping: recycling")
    assert f"(pid {first})" in line and "max_worker_memory" in line, line
    wait_for(lambda: echo(address).pid != first, message="a new worker to answer")
    wait_for(lambda: first not in children(process.pid), message="the grown worker to exit")
    assert_no_zombies(process.pid)
    stop_server(process)


# -- 7. every family, every worker mix-in ------------------------------------------------------

def check_stream(address, unix_dir):
    replies = [echo(address, f"request {i}") for i in range(10)]
    assert all(reply.generation == 1 for reply in replies), replies  # workers answered


def check_datagram(address, unix_dir):
    """Each of 20 datagrams, sent at once, is answered exactly once."""
    with datagram_client(address, unix_dir) as client:
        for i in range(20):
            client.sendto(f"echo id{i}".encode(), address)
        replies = [parse_reply(client.recv(1024).decode().rstrip("\n")) for _ in range(20)]
        # One more request: a duplicate answer, sent as the first one was, would
        # show up before the answer to this later one.
        client.sendto(b"echo last", address)
        assert parse_reply(client.recv(1024).decode().rstrip("\n")).text == "last"
    assert sorted(reply.text for reply in replies) == sorted(f"id{i}" for i in range(20))
    assert all(reply.generation == 1 for reply in replies), replies


FAMILIES = {"tcp": check_stream, "udp": check_datagram,
            "unix": check_stream, "unixgram": check_datagram}


@pytest.mark.parametrize("mixin", ["sync", "threading", "forking"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_with_every_worker_mixin(spawn, unix_dir, family, mixin):
    args = ["--family", family, "--mixin", mixin]
    path = os.path.join(unix_dir, "server.sock")
    if family.startswith("unix"):
        args += ["--address", path]
    process, address = start_booted(spawn, *args, workers=2)
    FAMILIES[family](address, unix_dir)
    stop_server(process)
    assert not os.path.exists(path), "the master left its socket file behind"


# -- 8. over the standard library's http.server ------------------------------------------------

def http_get(address, path):
    connection = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        pid, served_path = response.read().decode().split()
        assert served_path == path
        return int(pid)
    finally:
        connection.close()


def distinct_pids(request, wanted=2, attempts=200, connections=4):
    """Send requests from `connections` client threads until `wanted` distinct
    pids have answered (at most `attempts` requests each)."""
    seen, failures, lock = set(), [], threading.Lock()

    def client(n):
        for i in range(attempts):
            with lock:
                if len(seen) >= wanted:
                    return
            try:
                pid = request(f"/{n}/{i}")
            except (OSError, AssertionError, http.client.HTTPException) as error:
                failures.append(error)
                return
            with lock:
                seen.add(pid)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * CLIENT_TIMEOUT)
    assert not failures, failures
    return seen


def test_over_stdlib_threading_http_server(spawn):
    process, address = start_booted(spawn, "--stdlib-http", workers=2)
    pids = distinct_pids(lambda path: http_get(address, path))
    assert len(pids) == 2 and pids <= live_children(process.pid), pids
    stop_server(process)


# -- 9. reuse_port -------------------------------------------------------------------------------

def test_reuse_port_serves_from_several_workers(spawn):
    process, address = start_booted(spawn, "--set", "reuse_port=True", workers=3)
    pids = distinct_pids(lambda words: echo(address, words).pid)
    assert len(pids) >= 2 and pids <= live_children(process.pid), pids
    stop_server(process)


@pytest.mark.parametrize("server_class", [prefork.PreforkUnixStreamServer,
                                          prefork.PreforkUnixDatagramServer])
def test_reuse_port_is_refused_over_unix_sockets(unix_dir, server_class):
    path = os.path.join(unix_dir, "server.sock")
    with pytest.raises(ValueError, match="reuse_port"):
        server_class(path, prefork.StreamRequestHandler, reuse_port=True)
    assert not os.path.exists(path)


# -- 10. the listen backlog ----------------------------------------------------------------------

def somaxconn():
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


def test_listen_backlog_is_a_production_value():
    expected = min(2048, somaxconn())
    assert prefork.PreforkTCPServer.request_queue_size == expected != 5
    with prefork.PreforkTCPServer(("127.0.0.1", 0), prefork.StreamRequestHandler) as server:
        assert server.request_queue_size == expected
        # And listen() was given it: with the stdlib's 5, the kernel's accept queue
        # would be full after 6 connections and the next connect() would stall.
        with contextlib.ExitStack() as stack:
            for _ in range(min(16, expected)):
                client = stack.enter_context(socket.socket())
                client.settimeout(CLIENT_TIMEOUT)
                client.connect(server.server_address)
