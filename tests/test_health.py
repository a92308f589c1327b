"""The master's health listener (--health-bind) and the drain delay
(--drain-delay) of the real `prefork` command: issue 12 point 1.

The master answers HTTP on the health listener from its own loop: 200
`ready` once its first generation of workers serves, 503 `booting` before,
503 `draining` from the start of a graceful stop (TERM, `prefork ctl stop`)
to its exit.  With a drain delay, a graceful stop first answers 503 for that
long while the workers still serve; only then the usual graceful stop runs.

Checked here, through the real command on 127.0.0.1 port 0 (the real port
read from the `Health listener at:` line):

- the answers: booting then ready; GET and HEAD on any path, exact headers;
  ready throughout a HUP reload (a refused one too) and a USR2 upgrade;
- the drain: TERM with and without a delay, `ctl stop`, INT/QUIT cutting the
  delay short, TERM/HUP/TTIN/TTOU/USR2 ignored during it;
- faults on the health port (silent, garbage, reset, long line, 50 clients
  that never read): the master keeps answering, the app keeps serving;
- checks caught by a stop: one the old master accepted before TERM, after
  USR2, is still answered; a closing listener answers the requests there;
- the settings: bad values refused in one line, a taken port, off by default.
"""

import contextlib
import os
import re
import signal
import socket
import time

import psutil
import pytest

from prefork.channel import Channel
from prefork.health import HealthServer
from prefork.loop import ServeLoop

from support import (
    CLIENT_TIMEOUT, HealthPoller, ask, assert_one_line_error, assert_tree_gone, booted_workers,
    can_connect, connect, connection_holder, exit_code, free_port, health, health_address,
    health_request, http_exchange, listening_ports, live_children, logged_messages,
    parse_http_response, port_is_free, printed_config, process_tree, recv_all, recv_line,
    reset, run_prefork, spawn_prefork, start_prefork, status_json, taken_port, terminate,
    wait_booted, wait_for, wait_health, wait_log, wait_reloaded, write_config, write_slow_app)

APP = "command_apps:Echo"
HEALTH = ("--health-bind", "127.0.0.1:0")
READY = (200, "ready\n")
BOOTING = (503, "booting\n")
DRAINING = (503, "draining\n")
DRAIN_LINE = "Draining for 1.5 s: health checks answer 503, still serving"


# -- helpers (the general ones are in support.py: the health listener) --------------------

def start_health(spawn, *args, app=APP, workers=2, **kwargs):
    """start_prefork() with a health listener on port 0 and args: (process,
    the app's address, the health address)."""
    process, addresses = start_prefork(spawn, *HEALTH, *args, app, workers=workers, **kwargs)
    return process, addresses[0], health_address(process)


def start_ready(spawn, unix_dir):
    """start_health() with a control socket in unix_dir, once health answers
    ready: (process, the app's address, the health address, the control path)."""
    control = os.path.join(unix_dir, "ctl")
    process, app, address = start_health(spawn, "--control", control)
    wait_health(address, READY, within=2)
    return process, app, address, control


def assert_healthy(process, app, address, control=None):
    """The master still serves: health 200 ready at once, the app answers,
    and (with a control socket) `prefork status` names it."""
    started = time.monotonic()
    assert health(address) == READY
    assert time.monotonic() - started < 1.0
    assert ask(app)["pid"] in live_children(process.pid)
    if control:
        assert status_json("--control", control)["master"]["pid"] == process.pid


# -- the answers ---------------------------------------------------------------------------

# Each worker waits in post_worker_init until the test creates its gate file.
GATED_BOOT = """\
import os
import time

def post_worker_init(server, worker):
    gate = os.path.join({directory!r}, "gate-%d" % worker.number)
    while not os.path.exists(gate):
        time.sleep(0.01)
"""


@pytest.mark.timeout(20)
def test_booting_until_every_first_worker_serves_then_ready(spawn, tmp_path):
    config = write_config(tmp_path / "gated.py", GATED_BOOT.format(directory=str(tmp_path)))
    process = spawn_prefork(spawn, "-c", config, "-w", "2", "-b", "127.0.0.1:0", *HEALTH, APP)
    address = health_address(process)
    assert health(address) == BOOTING
    assert health(address, "HEAD") == (503, "")

    (tmp_path / "gate-1").touch()
    wait_log(process, "Booted worker 1 ")
    # One worker of two serves: the first generation is not all there yet.
    assert health(address) == BOOTING

    (tmp_path / "gate-2").touch()
    wait_log(process, "Booted worker 2 ")
    assert wait_health(address, READY, within=2) < 2
    assert [health(address) for _ in range(5)] == [READY] * 5
    terminate(process)


@pytest.mark.timeout(20)
def test_ready_answers_get_and_head_on_any_path_with_exact_headers(spawn):
    process, app, address = start_health(spawn)
    wait_health(address, READY, within=2)

    for path in ("/", "/healthz", "/any/where?probe=1"):
        status_line, headers, body = parse_http_response(
            http_exchange(address, health_request("GET", path)))
        assert status_line == "HTTP/1.0 200 OK"
        assert headers["connection"] == "close"
        assert headers["content-type"] == "text/plain"
        assert headers["content-length"] == "6"
        assert body == b"ready\n"

        status_line, headers, body = parse_http_response(
            http_exchange(address, health_request("HEAD", path)))
        assert status_line == "HTTP/1.0 200 OK"
        assert headers["connection"] == "close"
        assert headers["content-type"] == "text/plain"
        assert headers.get("content-length", "6") == "6"
        assert body == b""  # HEAD: the head only

        # A bare HTTP/1.0 request line, as HAProxy's `option httpchk` sends it.
        status_line, _, body = parse_http_response(
            http_exchange(address, f"GET {path} HTTP/1.0\r\n\r\n".encode()))
        assert (status_line, body) == ("HTTP/1.0 200 OK", b"ready\n")
    assert ask(app)["pid"] in live_children(process.pid)
    terminate(process)


# A reload's new generation boots slowly: the old one serves meanwhile, and
# the poller has time to see what the health listener answers then.
RELOADABLE = """\
import time

bind = "127.0.0.1:0"
workers = 2

def post_worker_init(server, worker):
    if worker.generation > 1:
        time.sleep(0.5)
"""


@pytest.mark.timeout(30)
def test_reloads_keep_answering_ready_throughout(spawn, tmp_path):
    config = write_config(tmp_path / "prefork.conf.py", RELOADABLE)
    process, _ = start_prefork(spawn, *HEALTH, APP, config=config, workers=2)
    address = health_address(process)
    wait_health(address, READY, within=2)

    with HealthPoller(address) as poller:
        poller.wait_for_answers(5)
        hup_at = time.monotonic()
        os.kill(process.pid, signal.SIGHUP)
        wait_reloaded(process, 2, 2)
        reloaded_at = time.monotonic()
        poller.wait_for_answers(5, since=reloaded_at)

        write_config(config, RELOADABLE + 'workers = "many"\n')
        os.kill(process.pid, signal.SIGHUP)
        wait_log(process, "Reload refused, the running configuration stays: ")
        poller.wait_for_answers(5, since=time.monotonic())
    during_reload = [answer for sent, answer in poller.answers if hup_at < sent < reloaded_at]
    assert len(during_reload) >= 5, "the poller did not sample the reload"
    assert {answer for _, answer in poller.answers} == {READY}, \
        [answer for _, answer in poller.answers if answer != READY][:5]
    assert health(address) == READY
    terminate(process)


# -- the drain -----------------------------------------------------------------------------

def assert_drains_while_serving(process, app, address, stop_at, until):
    """From stop_at on (a graceful stop just asked for): health says 503
    draining within 0.3 s; then, until the monotonic time `until`, every
    health check says so and the app answers every new connection."""
    assert wait_health(address, DRAINING, within=0.3) < 0.3
    served = 0
    while time.monotonic() < until:
        assert process.popen.poll() is None, "the master exited during the drain delay"
        assert health(address) == DRAINING
        assert ask(app)["pid"] in live_children(process.pid)
        served += 1
    assert served >= 5, f"only {served} requests during the drain delay"


@pytest.mark.timeout(20)
def test_term_with_a_drain_delay_answers_503_and_serves_then_stops(spawn):
    process, app, address = start_health(spawn, "--drain-delay", "1.5")
    wait_health(address, READY, within=2)
    tree = process_tree(process.pid)

    term_at = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    assert_drains_while_serving(process, app, address, term_at, until=term_at + 1.3)
    # After the delay: the normal graceful stop; the listener closes with the master.
    wait_for(lambda: not can_connect(app), timeout=4, message="the app's listener to close")
    assert process.wait(4) == 0
    assert time.monotonic() - term_at < 1.5 + 4
    assert_tree_gone(tree)
    assert port_is_free(app) and port_is_free(address)
    output = process.output()
    assert DRAIN_LINE in logged_messages(output.splitlines(), process.pid), output


@pytest.mark.timeout(20)
def test_term_without_delay_answers_draining_while_a_slow_request_finishes(spawn, tmp_path):
    slow_app = write_slow_app(tmp_path)
    process, app, address = start_health(spawn, app=slow_app, cwd=str(tmp_path))
    wait_health(address, READY, within=2)
    tree = process_tree(process.pid)

    with connect(app) as held:
        held.sendall(b"hold\n")
        assert recv_line(held) == b"holding\n"
        os.kill(process.pid, signal.SIGTERM)
        assert wait_health(address, DRAINING, within=0.3) < 0.3
        # The held request keeps its worker, and the master, there: still draining.
        wait_log(process, "Stopping (graceful)")
        for _ in range(10):
            assert health(address) == DRAINING
        assert process.popen.poll() is None
        held.sendall(b"go\n")
        assert recv_line(held) == b"ok\n"  # the request in flight finished
    assert process.wait(5) == 0
    assert_tree_gone(tree)
    assert port_is_free(address)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["INT", "QUIT"])
def test_int_or_quit_during_the_drain_delay_stops_at_once(spawn, name):
    process, app, address = start_health(spawn, "--drain-delay", "10")
    tree = process_tree(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    wait_log(process, f"[{process.pid}] [", "Draining for 10")
    wait_health(address, DRAINING, within=0.3)

    quick_at = time.monotonic()
    os.kill(process.pid, getattr(signal, "SIG" + name))
    assert process.wait(5) == 0
    assert time.monotonic() - quick_at < 2.0  # not the 10 s of the delay
    assert_tree_gone(tree)
    assert "Stopping (quick)" in process.output()
    assert port_is_free(app) and port_is_free(address)


@pytest.mark.timeout(20)
def test_term_hup_ttin_ttou_usr2_during_the_drain_delay_are_logged_and_ignored(spawn):
    process, app, address = start_health(spawn, "--drain-delay", "1.5")
    workers = set(booted_workers(process.lines))
    tree = process_tree(process.pid)
    term_at = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    wait_log(process, f"[{process.pid}] [", "Draining for ")

    for name in ("TERM", "HUP", "TTIN", "TTOU", "USR2"):
        os.kill(process.pid, getattr(signal, "SIG" + name))
        wait_log(process, f"[{process.pid}] [", f"{name} ignored")
    # The delay runs its course: 503 and serving, the same workers, none added.
    assert_drains_while_serving(process, app, address, term_at, until=term_at + 1.3)
    assert live_children(process.pid) == workers
    assert process.wait(5) == 0
    assert_tree_gone(tree)
    output = process.output()
    for started in ("Reloading", "Number of workers", "Upgrade: started"):
        assert started not in output, output


@pytest.mark.timeout(20)
def test_ctl_stop_drains_as_term_does(spawn, unix_dir):
    control = os.path.join(unix_dir, "ctl")
    process, app, address = start_health(spawn, "--drain-delay", "1.5", "--control", control)
    wait_health(address, READY, within=2)
    tree = process_tree(process.pid)

    stop_at = time.monotonic()
    result = run_prefork("ctl", "stop", "--control", control)
    assert result.returncode == 0, result
    assert_drains_while_serving(process, app, address, stop_at, until=stop_at + 1.3)
    assert process.wait(5) == 0
    assert_tree_gone(tree)
    output = process.output()
    assert DRAIN_LINE in logged_messages(output.splitlines(), process.pid), output


# -- faults on the health port -------------------------------------------------------------

@pytest.mark.timeout(20)
def test_a_silent_client_is_closed_after_2_s_and_delays_nobody(spawn, unix_dir):
    process, app, address, control = start_ready(spawn, unix_dir)

    silent = socket.create_connection(address, timeout=6)
    partial = socket.create_connection(address, timeout=6)
    partial.sendall(b"GET /healthz HT")  # a request line that never ends
    opened_at = time.monotonic()
    with silent, partial:
        # Meanwhile other health checks, and the app, answer at once.
        for _ in range(5):
            assert_healthy(process, app, address)
        for client in (silent, partial):
            with contextlib.suppress(ConnectionResetError):
                recv_all(client)  # EOF (or a reset): closed by the master
            assert 1.5 < time.monotonic() - opened_at < 3.5
    assert_healthy(process, app, address, control)
    assert "Traceback" not in terminate(process)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("garbage", [
    b"garbage\r\n\r\n",
    b"\x16\x03\x01\x00\xff\xfe\x00\x80\r\n\r\n",  # binary (a TLS hello's start), then CRLF
    b"GET\r\n\r\n",
    b"\xff\xfe\xfd / HTTP/1.1\r\n\r\n",
], ids=["word", "binary", "method-only", "binary-method"])
def test_garbage_gets_400_bad_request(spawn, unix_dir, garbage):
    process, app, address, control = start_ready(spawn, unix_dir)

    status_line, headers, body = parse_http_response(http_exchange(address, garbage))
    assert (status_line, body) == ("HTTP/1.0 400 Bad Request", b"bad request\n")
    assert headers["connection"] == "close"
    assert_healthy(process, app, address, control)
    assert "Traceback" not in terminate(process)


@pytest.mark.timeout(20)
def test_clients_that_reset_mid_request_or_before_the_answer(spawn, unix_dir):
    process, app, address, control = start_ready(spawn, unix_dir)

    for data in (b"GET /hea", health_request(), b""):
        for _ in range(10):
            sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
            if data:
                sock.sendall(data)
            reset(sock)  # mid-request, or before reading the answer
        assert_healthy(process, app, address)
    assert_healthy(process, app, address, control)
    assert "Traceback" not in terminate(process)


@pytest.mark.timeout(20)
def test_fifty_clients_at_once_that_never_read(spawn, unix_dir):
    process, app, address, control = start_ready(spawn, unix_dir)

    with contextlib.ExitStack() as clients:
        for index in range(50):
            sock = clients.enter_context(socket.create_connection(address, timeout=5))
            if index % 2:  # half send a request and never read the answer
                sock.sendall(health_request())
            # the others send nothing at all
        for _ in range(5):
            assert_healthy(process, app, address)
    assert_healthy(process, app, address, control)
    assert "Traceback" not in terminate(process)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("size", [5000, 1 << 20], ids=["5KiB-line", "1MiB-no-newline"])
def test_a_request_line_over_4_kib_gets_400_or_is_closed(spawn, unix_dir, size):
    process, app, address, control = start_ready(spawn, unix_dir)
    rss_before = psutil.Process(process.pid).memory_info().rss

    if size < 65536:
        data = b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        data = b"GET /" + b"a" * size  # never a line end
    sent_at = time.monotonic()
    answer = b""
    with socket.create_connection(address, timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            answer = recv_all(sock)
    assert time.monotonic() - sent_at < 3.5  # answered or closed, not left hanging
    if answer:
        status_line, _, body = parse_http_response(answer)
        assert (status_line, body) == ("HTTP/1.0 400 Bad Request", b"bad request\n")
    # It read no more than a line's worth: nothing like the 1 MiB kept.
    assert psutil.Process(process.pid).memory_info().rss - rss_before < 4 << 20
    assert_healthy(process, app, address, control)
    assert "Traceback" not in terminate(process)


class Draining:
    """The master as the health listener sees it (health.py), stopping."""

    def health(self):
        return "draining"


@pytest.mark.timeout(10)
def test_a_closing_health_listener_answers_the_checks_already_there():
    """In-process: a check whose request has come, accepted but not yet read
    when the master closes the listener (it exits), gets its answer --
    closing it unread would reset it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    channel = Channel(HealthServer(listener, Draining()), ServeLoop())
    with connect(listener.getsockname()) as check:
        check.sendall(health_request())
        channel.accept()  # (the master's loop would run its reader next turn)
        assert len(channel.waiting) == 1
        channel.close()
        status_line, _, body = parse_http_response(recv_all(check))
    assert (status_line, body) == ("HTTP/1.0 503 Service Unavailable", b"draining\n")
    assert listener.fileno() == -1


# -- USR2 -----------------------------------------------------------------------------------

@pytest.mark.timeout(40)
def test_usr2_upgrade_never_takes_the_host_out_of_rotation(subreaper, spawn, tmp_path,
                                                          unix_dir):
    app = ("127.0.0.1", free_port())
    address = ("127.0.0.1", free_port())
    pidfile = str(tmp_path / "prefork.pid")
    process, _ = start_prefork(
        spawn, "-b", f"127.0.0.1:{app[1]}", "--health-bind", f"127.0.0.1:{address[1]}",
        "--pid", pidfile, "--control", os.path.join(unix_dir, "ctl"), APP, workers=2)
    old = process.pid
    old_tree = process_tree(old)
    assert health_address(process) == address
    wait_health(address, READY, within=2)

    with HealthPoller(address) as poller:
        poller.wait_for_answers(10)
        os.kill(old, signal.SIGUSR2)
        line = wait_log(process, f"[{old}] [", "Upgrade: started a new master (pid ")
        new = int(line.split("(pid ", 1)[1].split(")", 1)[0])
        start = len(process.lines)
        wait_log(process, f"[{new}] [", "Upgrade: serving beside the old master")
        wait_booted(process, 2, since=start)
        poller.wait_for_answers(10, since=time.monotonic())  # both masters answering

        os.kill(old, signal.SIGTERM)
        assert process.wait(10) == 0
        assert_tree_gone(old_tree)
        gone_at = time.monotonic()
        poller.wait_for_answers(20, since=gone_at)
    bad = [answer for _, answer in poller.answers if answer != READY]
    assert not bad, bad[:5]
    # The new master alone holds the health listener now, and answers.
    assert address[1] in listening_ports(new)
    assert health(address) == READY
    assert ask(app)["pid"] in live_children(new)

    new_tree = process_tree(new)
    os.kill(new, signal.SIGTERM)
    assert exit_code(new) == 0, "".join(process.lines)
    assert_tree_gone(new_tree)


@pytest.mark.timeout(40)
def test_a_check_the_old_master_accepted_is_answered_after_it_is_told_to_stop(
        subreaper, spawn, tmp_path, unix_dir):
    """After USR2, TERM to the old master while it holds a health check whose
    request has not all come: it stops accepting, but that check is still
    answered, ready -- not reset or closed unanswered."""
    process, app, address = start_health(spawn, "--control", os.path.join(unix_dir, "ctl"),
                                         app=write_slow_app(tmp_path), cwd=tmp_path)
    old = process.pid
    wait_health(address, READY, within=2)
    with connect(app) as busy:  # an old worker's request in flight: the old master stays
        busy.sendall(b"hold\n")
        assert recv_line(busy) == b"holding\n"
        os.kill(old, signal.SIGUSR2)
        line = wait_log(process, f"[{old}] [", "Upgrade: started a new master (pid ")
        new = int(line.split("(pid ", 1)[1].split(")", 1)[0])
        wait_log(process, f"[{new}] [", "Upgrade: serving beside the old master")
        os.kill(new, signal.SIGSTOP)  # now only the old master accepts health checks
        try:
            with connect(address) as check:
                check.sendall(health_request()[:20])  # a head not yet complete
                wait_for(lambda: connection_holder(check, [old]),
                         message="the old master to accept the check")
                os.kill(old, signal.SIGTERM)
                wait_log(process, f"[{old}] [", "Stopping (graceful)")
                check.sendall(health_request()[20:])
                status_line, _, body = parse_http_response(recv_all(check))
                assert (status_line, body) == ("HTTP/1.0 200 OK", b"ready\n")
        finally:
            os.kill(new, signal.SIGCONT)
        busy.sendall(b"go on\n")
        assert recv_line(busy) == b"ok\n"
    assert process.wait(10) == 0
    new_tree = process_tree(new)
    wait_health(address, READY, within=2)  # the new master's, alone
    os.kill(new, signal.SIGTERM)
    assert exit_code(new) == 0, "".join(process.lines)
    assert_tree_gone(new_tree)


# -- settings ------------------------------------------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("args, message", [
    (["--health-bind", "nonsense"], re.compile(r".*nonsense.*")),
    (["--health-bind", "udp://127.0.0.1:0"], re.compile(r"(?i).*health.*")),
    (["--drain-delay", "-1"],
     re.compile(r"drain_delay must be a number >= 0(\.0)?, not -1(\.0)?")),
    (["--drain-delay", "abc"], re.compile(r"drain_delay must be a number >= 0(\.0)?, not 'abc'")),
], ids=["nonsense", "udp", "negative-delay", "abc-delay"])
def test_bad_settings_are_one_line(args, message):
    assert_one_line_error(run_prefork("-b", "127.0.0.1:0", *args, APP), message)


@pytest.mark.timeout(20)
def test_bad_settings_in_a_config_file_or_the_environment_are_one_line(tmp_path):
    config = write_config(tmp_path / "bad.py", "drain_delay = -2\n")
    assert_one_line_error(
        run_prefork("-c", config, "-b", "127.0.0.1:0", APP),
        re.compile(rf"config file {re.escape(config)}: drain_delay must be a number "
                   r">= 0(\.0)?, not -2(\.0)?"))
    assert_one_line_error(
        run_prefork("-b", "127.0.0.1:0", APP, env={"PREFORK_CMD_ARGS": "--drain-delay abc"}),
        re.compile(r"\$PREFORK_CMD_ARGS: drain_delay must be a number >= 0(\.0)?, not 'abc'"))


@pytest.mark.timeout(20)
def test_settings_come_from_the_table(tmp_path):
    values = printed_config(run_prefork("--print-config", APP))
    assert values["health_bind"] is None
    assert values["drain_delay"] == 0
    config = write_config(tmp_path / "conf.py",
                          'health_bind = "127.0.0.1:9"\ndrain_delay = 2.5\n')
    values = printed_config(run_prefork("-c", config, "--print-config", APP))
    assert (values["health_bind"], values["drain_delay"]) == ("127.0.0.1:9", 2.5)
    values = printed_config(run_prefork(
        "-c", config, "--print-config", APP,
        env={"PREFORK_CMD_ARGS": "--health-bind 127.0.0.1:7 --drain-delay 4"}))
    assert (values["health_bind"], values["drain_delay"]) == ("127.0.0.1:7", 4)
    help_text = run_prefork("--help").stdout
    assert "--health-bind" in help_text and "--drain-delay" in help_text


@pytest.mark.timeout(20)
def test_a_unix_health_bind_serves_or_is_refused_in_one_line(spawn, unix_dir):
    path = os.path.join(unix_dir, "health.sock")
    process = spawn_prefork(spawn, "-w", "1", "-b", "127.0.0.1:0", "--health-bind",
                            f"unix:{path}", APP)
    line = process.readline_until(lambda l: "Health listener at: " in l or "prefork: " in l)
    if line.startswith("prefork: "):  # unsupported: one clear line, exit status 1
        assert process.wait(10) == 1
        output = process.output()
        assert output == line and re.search(r"(?i)health", line), output
    else:  # supported: it answers there
        wait_booted(process, 1)

        def ready():
            return parse_http_response(http_exchange(path, health_request()))[2] == b"ready\n"
        wait_for(ready, timeout=3, message="ready on the Unix health socket")
        terminate(process)


@pytest.mark.timeout(20)
def test_a_taken_health_port_is_one_line():
    with taken_port() as port:
        result = run_prefork("-w", "1", "-b", "127.0.0.1:0", "--health-bind",
                             f"127.0.0.1:{port}", APP)
    assert_one_line_error(result, re.compile(rf".*127\.0\.0\.1:{port}.*in use.*", re.I))


@pytest.mark.timeout(20)
def test_off_by_default_nothing_else_listens(spawn):
    process, [app] = start_prefork(spawn, APP, workers=1)
    assert listening_ports(process.pid) == {app[1]}
    assert not any("Health listener" in line for line in process.lines)
    terminate(process)

    process, app, address = start_health(spawn, workers=1)
    assert listening_ports(process.pid) == {app[1], address[1]}
    terminate(process)


@pytest.mark.timeout(20)
def test_workers_do_not_hold_the_health_listener(spawn):
    # Else, with the master gone, a worker would keep the port accepting
    # health checks that nobody answers (timeouts rather than refusals).
    process, app, address = start_health(spawn)
    for worker in live_children(process.pid):
        assert listening_ports(worker) == {app[1]}
    terminate(process)
