"""The `prefork` command serving for real: every kind of application
(a stream handler under each worker class, an http.server handler, an xmlrpc
server class, a WSGI application and a factory, a datagram handler), on every
kind of bind (TCP, Unix stream, IPv6, several at once, an inherited
descriptor, UDP, Unix datagram), logging as gunicorn does (the error log's
format and level, --error-logfile, --access-logfile, USR1 reopening), its
pidfile, and its exit statuses (0 after TERM, 3 when no worker can boot, 1
when a worker had to be killed at the stop).

Each test runs the real command (support.start_prefork, cwd tests/apps, the
applications of tests/apps/command_apps.py) and talks to it over real sockets.
"""

import http.client
import os
import re
import signal
import socket
import stat
import xmlrpc.client

import pytest

import prefork
from support import (
    CLIENT_TIMEOUT, ask, ask_on, can_connect, connect, datagram_client, exchange, facts,
    file_lines, http_get, printed_config, process_tree, recv_line, run_prefork, spawn_prefork,
    start_prefork, terminate, wait_for, wait_lines, write_config, write_slow_app)

# -- helpers -----------------------------------------------------------------------

LOG_PREFIX = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] "  # [time] [pid]
LOG_LINE = re.compile(LOG_PREFIX + r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ")


def http_exchange(address, raw):
    """Send raw bytes to an HTTP server (TCP or Unix) and return all it sends back."""
    with connect(address) as sock:
        return exchange(sock, raw)


def ipv6_loopback():
    """Whether this host can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(),
                                reason="IPv6 loopback (::1) is not available on this host")


def workers_of(tree):
    """The pids of the workers in a process_tree() taken at start."""
    return {process.pid for process in tree[1:]}


def assert_every_worker_serves(address, workers=2):
    """Each of `workers` workers answers on address sooner or later.  A sync
    worker holding an idle connection cannot take the next one, so each round
    holds one open while another asks: rounds reach different workers."""
    seen = set()

    def all_seen():
        with connect(address) as idle:
            seen.add(ask(address)["worker"])
            seen.add(ask_on(idle, "idle")["worker"])
        return len(seen) >= workers
    wait_for(all_seen, timeout=10, message=f"every worker to serve on {address} (seen {seen})")
    assert seen == set(range(1, workers + 1))


# -- kinds of application -------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("worker_class", ["sync", "threading", "forking"])
def test_stream_handler_serves_with_each_worker_class(spawn, worker_class):
    process, [address] = start_prefork(spawn, "-k", worker_class, "command_apps:Echo", workers=1)
    tree = process_tree(process.pid)
    [worker] = workers_of(tree)
    if worker_class == "sync":
        reply = ask(address)
    else:
        # threading and forking workers answer while another connection idles
        with connect(address):
            reply = ask(address)
    assert reply["worker"] == 1
    assert reply["imported_by"][0] == worker  # imported in the worker, not the master
    if worker_class == "forking":
        assert reply["pid"] not in (worker, process.pid)  # a child per request
    else:
        assert reply["pid"] == worker
    terminate(process, tree)


@pytest.mark.timeout(30)
def test_http_server_handler_answers_twice_on_one_keep_alive_connection(spawn):
    process, [(host, port)] = start_prefork(spawn, "command_apps:Hello")
    tree = process_tree(process.pid)
    connection = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
    try:
        answers, sockets = [], []
        for _ in range(2):
            connection.request("GET", "/")
            response = connection.getresponse()
            answers.append((response.status, response.read().decode()))
            sockets.append(connection.sock)  # None if the server had closed it
        assert sockets[0] is sockets[1] is not None  # one connection, kept open
    finally:
        connection.close()
    assert [status for status, _ in answers] == [200, 200]
    pids = {facts(body)["pid"] for _, body in answers}
    assert len(pids) == 1 and pids <= workers_of(tree)
    terminate(process, tree)


@pytest.mark.timeout(30)
def test_xmlrpc_server_class_answers_from_a_worker(spawn):
    process, [(host, port)] = start_prefork(spawn, "command_apps:Calculator")
    tree = process_tree(process.pid)
    with xmlrpc.client.ServerProxy(f"http://{host}:{port}/") as proxy:
        assert proxy.add(2, 3) == 5
        answer = facts(proxy.facts())
    assert answer["pid"] != process.pid
    assert answer["pid"] in workers_of(tree)
    assert answer["worker"] in (1, 2)
    terminate(process, tree)


def get_once(spawn, *args):
    """Start the command with args, GET / once, stop it (terminate()):
    (status, body, the pids of its workers)."""
    process, [address] = start_prefork(spawn, *args)
    tree = process_tree(process.pid)
    status, body = http_get(address)
    terminate(process, tree)
    return status, body, workers_of(tree)


@pytest.mark.timeout(30)
def test_wsgi_app_names_prefork_as_its_server_software(spawn):
    status, body, workers = get_once(spawn, "command_apps:app")
    assert status == 200
    assert body.startswith("wsgi version=1 ")
    assert body.endswith(f" software=prefork/{prefork.__version__}\n")
    assert facts(body)["pid"] in workers


@pytest.mark.timeout(30)
def test_wsgi_app_with_threads_serves_on_threading_workers(spawn):
    args = ("--threads", "4", "command_apps:app")
    status, body, _ = get_once(spawn, *args)
    assert status == 200 and body.startswith("wsgi version=1 ")
    # what those arguments run: gunicorn's --threads makes the workers threading ones
    printed = printed_config(run_prefork("-w", "2", "-b", "127.0.0.1:0", "--print-config", *args))
    assert (printed["worker_class"], printed["max_threads"]) == ("threading", 4)


@pytest.mark.timeout(30)
def test_wsgi_factory_called_with_its_argument(spawn):
    status, body, _ = get_once(spawn, "command_apps:create_app('hey')")
    assert status == 200
    assert body.startswith("hey version=1 ")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["udp", "unix-dgram"])
def test_datagram_handler_answers_datagrams(spawn, unix_dir, kind):
    if kind == "udp":
        bind = "udp://127.0.0.1:0"
    else:
        bind = "unix-dgram:" + os.path.join(unix_dir, "upper.sock")
    process, [address] = start_prefork(spawn, "-b", bind, "command_apps:Upper")
    tree = process_tree(process.pid)
    with datagram_client(address, unix_dir) as client:  # bound to its own path on Unix
        client.sendto(b"shout", address)
        reply = client.recv(65536).decode()
    assert reply.startswith("SHOUT version=1 ")
    assert facts(reply)["pid"] in workers_of(tree)
    terminate(process, tree)


# -- kinds of bind ------------------------------------------------------------------

def assert_unix_bind_serves(spawn, path):
    """command_apps:Echo started on unix:PATH listens at path, answers there
    from a worker, and its socket file is gone after the stop."""
    process, addresses = start_prefork(spawn, "-b", f"unix:{path}", "command_apps:Echo")
    assert addresses == [path]
    tree = process_tree(process.pid)
    assert ask(path)["pid"] in workers_of(tree)
    terminate(process, tree)
    assert not os.path.exists(path)


@pytest.mark.timeout(30)
def test_unix_stream_bind_serves_and_its_file_goes_at_the_stop(spawn, unix_dir):
    assert_unix_bind_serves(spawn, os.path.join(unix_dir, "echo.sock"))


@needs_ipv6
@pytest.mark.timeout(30)
def test_ipv6_loopback_bind_serves(spawn):
    process, [address] = start_prefork(spawn, "-b", "[::1]:0", "command_apps:Echo")
    assert address[0] == "::1" and address[1] > 0
    tree = process_tree(process.pid)
    with connect(address) as sock:
        assert sock.family == socket.AF_INET6
    assert ask(address)["pid"] in workers_of(tree)
    terminate(process, tree)


@needs_ipv6
@pytest.mark.timeout(40)
def test_several_binds_each_answer_and_both_workers_serve_on_each(spawn, unix_dir):
    path = os.path.join(unix_dir, "echo.sock")
    process, addresses = start_prefork(spawn, "-b", "127.0.0.1:0", "-b", f"unix:{path}",
                                       "-b", "[::1]:0", "command_apps:Echo", workers=2)
    tree = process_tree(process.pid)
    assert len(addresses) == 3
    assert addresses[0][0] == "127.0.0.1" and addresses[1] == path and addresses[2][0] == "::1"
    for address in addresses:
        assert ask(address)["pid"] in workers_of(tree)
        assert_every_worker_serves(address)
    terminate(process, tree)
    assert not os.path.exists(path)


@pytest.mark.timeout(30)
def test_inherited_descriptor_is_served_and_keeps_its_address(spawn):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        fd = listener.fileno()
        process, addresses = start_prefork(spawn, "-b", f"fd://{fd}", "command_apps:Echo",
                                           pass_fds=(fd,))
        assert addresses == [address]
        tree = process_tree(process.pid)
        assert ask(address)["pid"] in workers_of(tree)
        terminate(process, tree)
        # The command's stop left the shared socket alone: ours still listens there.
        assert listener.getsockname() == address
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        with connect(address):
            listener.settimeout(CLIENT_TIMEOUT)
            accepted, _ = listener.accept()
            accepted.close()


@pytest.mark.timeout(30)
def test_stale_unix_socket_file_is_replaced_at_the_next_start(spawn, unix_dir):
    path = os.path.join(unix_dir, "echo.sock")
    first, _ = start_prefork(spawn, "-b", f"unix:{path}", "command_apps:Echo")
    first.stop(signal.SIGKILL)  # no clean-up: the socket file stays, nobody listening
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    with pytest.raises(ConnectionRefusedError):
        connect(path)
    assert_unix_bind_serves(spawn, path)


# -- logging ------------------------------------------------------------------------

BAD_REQUEST = b"BREW / HTTP/1.0\r\n\r\n"  # http.server answers 501 and logs an error
GET = b"GET / HTTP/1.0\r\n\r\n"     # HTTP/1.0: the server closes after its answer


@pytest.mark.timeout(30)
def test_every_log_line_has_gunicorns_format(spawn):
    process, [address] = start_prefork(spawn, "command_apps:Hello")
    tree = process_tree(process.pid)
    assert http_exchange(address, GET).startswith(b"HTTP/1.1 200 ")
    assert http_exchange(address, BAD_REQUEST).startswith(b"HTTP/1.1 501 ")
    output = terminate(process, tree)
    lines = output.splitlines()
    assert lines
    assert [line for line in lines if not LOG_LINE.match(line)] == []
    # http.server's own lines go through the log: its error as a WARNING, and
    # no access line at all without --access-logfile.
    assert any("[WARNING]" in line and "code 501" in line for line in lines), output
    assert not any("GET / HTTP" in line for line in lines), output


@pytest.mark.timeout(30)
def test_log_level_warning_leaves_out_the_info_lines(spawn, unix_dir):
    path = os.path.join(unix_dir, "hello.sock")
    process = spawn_prefork(spawn, "-w", "2", "-b", f"unix:{path}", "--log-level", "warning",
                            "command_apps:Hello")
    wait_for(lambda: can_connect(path), message="the listener")  # no INFO line to wait on
    assert http_exchange(path, GET).startswith(b"HTTP/1.1 200 ")
    assert http_exchange(path, BAD_REQUEST).startswith(b"HTTP/1.1 501 ")
    wait_for(lambda: len(process_tree(process.pid)) == 3, message="both workers")
    tree = process_tree(process.pid)
    output = terminate(process, tree)
    lines = output.splitlines()
    assert [line for line in lines if not LOG_LINE.match(line)] == []
    assert not any("[INFO]" in line for line in lines), output
    assert any("[WARNING]" in line and "code 501" in line for line in lines), output


@pytest.mark.timeout(30)
def test_error_logfile_takes_the_log_off_stderr(spawn, unix_dir, tmp_path):
    path = os.path.join(unix_dir, "echo.sock")
    error_log = str(tmp_path / "error.log")
    process = spawn_prefork(spawn, "-w", "2", "-b", f"unix:{path}",
                            "--error-logfile", error_log, "command_apps:Echo")
    wait_lines(error_log, "Booted worker", 2)
    tree = process_tree(process.pid)
    ask(path)
    output = terminate(process, tree)
    assert output == ""
    lines = file_lines(error_log)
    assert [line for line in lines if not LOG_LINE.match(line)] == []
    assert any(f"[{process.pid}] [INFO] Starting prefork master" in line for line in lines)
    assert any(f"Listening at: unix:{path} ({process.pid})" in line for line in lines)
    assert any("[INFO] Stopping (graceful)" in line for line in lines)


DURATION = r" \d+\.\d{3}ms$"


def access_line(client, request, status, size):
    """A regex for one access log line: client address, worker, request, status, bytes."""
    return re.compile(LOG_PREFIX + re.escape(client) + r" \[worker [12]\] " +
                      re.escape(f'"{request}" {status} ') + size + DURATION)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("app", ["command_apps:Hello", "command_apps:app"])
def test_access_logfile_has_one_line_per_http_request(spawn, tmp_path, app):
    access_log = str(tmp_path / "access.log")
    process, [address] = start_prefork(spawn, "--access-logfile", access_log, app)
    tree = process_tree(process.pid)
    expected = []
    for path in ("/first", "/second?x=1"):
        connection = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
        try:
            connection.request("GET", path)
            client = "127.0.0.1:%d" % connection.sock.getsockname()[1]
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 200
        # the bytes sent: known to the WSGI server; http.server's handler may say "-"
        size = str(len(body)) if app.endswith(":app") else r"\S+"
        expected.append(access_line(client, f"GET {path} HTTP/1.1", 200, size))
    wait_lines(access_log, "[worker ", 2)
    output = terminate(process, tree)
    lines = file_lines(access_log)
    assert len(lines) == 2, lines
    # one line for each request, in either order (two workers write the file)
    for pattern in expected:
        assert len([line for line in lines if pattern.match(line)]) == 1, (pattern.pattern, lines)
    assert "GET /first" not in output  # in the access log only


@pytest.mark.timeout(30)
def test_access_logfile_has_one_line_per_stream_connection(spawn, tmp_path):
    access_log = str(tmp_path / "access.log")
    process, [address] = start_prefork(spawn, "--access-logfile", access_log,
                                       "command_apps:Echo")
    tree = process_tree(process.pid)
    clients = []
    for _ in range(3):
        with connect(address) as sock:
            clients.append("127.0.0.1:%d" % sock.getsockname()[1])
            ask_on(sock)
    wait_lines(access_log, "[worker ", 3)
    terminate(process, tree)
    lines = file_lines(access_log)
    assert len(lines) == 3, lines
    for line in lines:
        assert any(access_line(client, "-", "-", "-").match(line) for client in clients), line


@pytest.mark.timeout(30)
def test_usr1_reopens_the_log_files_in_master_and_workers(spawn, tmp_path, unix_dir):
    path = os.path.join(unix_dir, "hello.sock")
    error_log, access_log = str(tmp_path / "error.log"), str(tmp_path / "access.log")
    process = spawn_prefork(spawn, "-w", "2", "-b", f"unix:{path}", "--error-logfile", error_log,
                            "--access-logfile", access_log, "command_apps:Hello")
    wait_lines(error_log, "Booted worker", 2)
    tree = process_tree(process.pid)
    assert http_exchange(path, GET).startswith(b"HTTP/1.1 200 ")
    wait_lines(access_log, '"GET / HTTP/1.0" 200')

    # as logrotate does: move the files away, then USR1
    os.rename(error_log, error_log + ".1")
    os.rename(access_log, access_log + ".1")
    os.kill(process.pid, signal.SIGUSR1)
    reopened = wait_lines(error_log, "[INFO] reopened log files", 3)
    pids = {int(re.search(r"\] \[(\d+)\] ", line).group(1)) for line in reopened}
    assert pids == {process.pid} | workers_of(tree)

    for _ in range(4):
        assert http_exchange(path, GET).startswith(b"HTTP/1.1 200 ")
    wait_lines(access_log, '"GET / HTTP/1.0" 200', 4)
    terminate(process, tree)
    assert len(file_lines(access_log + ".1")) == 1  # the old file got nothing more
    assert len(file_lines(access_log)) == 4
    assert any("[INFO] Stopping (graceful)" in line for line in file_lines(error_log))
    assert not any("Stopping" in line for line in file_lines(error_log + ".1"))


# -- the pidfile ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_pidfile_holds_the_master_pid_until_the_stop(spawn, tmp_path):
    pidfile = tmp_path / "prefork.pid"
    process, [address] = start_prefork(spawn, "--pid", str(pidfile), "command_apps:Echo")
    tree = process_tree(process.pid)
    assert pidfile.read_text() == f"{process.pid}\n"
    ask(address)
    terminate(process, tree)
    assert not pidfile.exists()


@pytest.mark.timeout(30)
def test_stale_pidfile_is_replaced(spawn, tmp_path):
    gone = spawn(["true"])
    assert gone.wait() == 0  # exited and reaped: its pid is stale
    pidfile = tmp_path / "prefork.pid"
    pidfile.write_text(f"{gone.pid}\n")
    process, _ = start_prefork(spawn, "--pid", str(pidfile), "command_apps:Echo")
    tree = process_tree(process.pid)
    assert pidfile.read_text() == f"{process.pid}\n"
    output = terminate(process, tree)
    assert f"[INFO] Replacing the stale pidfile {pidfile} (pid {gone.pid} is gone)" in output
    assert not pidfile.exists()


# -- exit statuses ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_workers_that_cannot_boot_make_the_master_give_up_with_status_3(spawn, tmp_path):
    config = write_config(tmp_path / "failing.py", "def post_worker_init(server, worker):\n"
                          "    raise RuntimeError('no database')\n")
    process = spawn_prefork(spawn, "-w", "2", "-b", "127.0.0.1:0", "--boot-attempts", "2",
                            "-c", config, "command_apps:Echo")
    assert process.wait(20) == 3
    lines = process.output().splitlines()
    giving_up = [line for line in lines if "Giving up" in line]
    assert len(giving_up) == 1, lines
    assert "[ERROR] Giving up: " in giving_up[0] and "no database" in giving_up[0]


@pytest.mark.timeout(30)
def test_request_past_the_graceful_timeout_makes_term_exit_1(spawn, tmp_path):
    app = write_slow_app(tmp_path)
    process, [address] = start_prefork(spawn, "--graceful-timeout", "0.5", app, workers=1,
                                       cwd=str(tmp_path))
    tree = process_tree(process.pid)
    with connect(address) as sock:
        sock.sendall(b"hold\n")
        assert recv_line(sock) == b"holding\n"  # in flight until we send or close
        output = terminate(process, tree, expected=1)
    assert "Killing worker 1" in output
