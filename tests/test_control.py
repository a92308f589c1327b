"""The master's control socket (prefork/control.py) and its client commands
`prefork status` and `prefork ctl` (prefork/client.py): issue 10, points 1-2.

Every server is the real command (support.start_prefork) serving
tests/apps/command_apps.py's Echo, with `--control PATH` in unix_dir unless
the test is about the default path; the tests talk to the socket itself
(one line in, one JSON line out) or run the real client command.

1. Every command over the raw socket: status (the master and its real
   children, request totals and rate), workers N, reload, stop (graceful),
   stop --quick, reopen -- each answered with "ok": true.
2. Faults: a silent client, garbage bytes, an unknown command, bad worker
   counts, a 1 MB line, clients that never read, too many clients, a client of
   another uid.  After each, the master still answers a status from another
   client within 1 s and its workers still serve.
3. `prefork status` (table, --json, --watch) and `prefork ctl`, and their
   one-line errors.
4. The default control path (beside the pidfile, in $XDG_RUNTIME_DIR), two
   masters on one path, a stale socket file.
"""

import contextlib
import json
import os
import re
import signal
import socket
import stat
import threading
import time

import pytest

import prefork.control
from support import (
    ask, assert_one_line_error, connect, file_lines, live_children, logged_addresses,
    python_runnable_as, recv_all, recv_line, run_prefork, sigint_is_ignored, spawn_prefork,
    start_prefork, status_json, terminate, wait_for, wait_lines, wait_log, wait_reloaded)

APP = "command_apps:Echo"
MAX_WORKERS = 16  # the default max_workers for 2 workers: max(16, 4 x workers)
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
WORKER_FIELDS = {"number", "pid", "generation", "state", "requests", "request_age", "rss",
                 "cpu_percent", "age"}


# -- helpers ---------------------------------------------------------------------------

def read_answer(sock):
    """One JSON line from a control socket connection, as a dict."""
    line = recv_line(sock)
    assert line.endswith(b"\n"), f"no whole answer line: {line!r}"
    return json.loads(line)


def control(path, line, timeout=5.0):
    """Send one line (str or bytes, "\\n" added) to the control socket at
    path, on a new connection; its JSON answer as a dict."""
    data = line if isinstance(line, bytes) else line.encode()
    with connect_queued(path, timeout=timeout) as sock:
        sock.sendall(data + b"\n")
        return read_answer(sock)


def connect_queued(path, timeout=5.0):
    """connect() to a Unix socket path, retried while its listen backlog is
    full (a Unix socket's connect() with a timeout then fails with EAGAIN
    instead of waiting for the server to accept)."""
    def attempt():
        try:
            return connect(path, timeout=timeout)
        except BlockingIOError:
            return None
    return wait_for(attempt, timeout=2, interval=0.002, message=f"a connection to {path}")


@contextlib.contextmanager
def queued_clients(path, count, line=None):
    """`count` connections to the control socket at path (connect_queued()),
    opened one after another, each sending `line` (bytes) at once if given;
    none reads.  All are closed when the block ends."""
    with contextlib.ExitStack() as clients:
        for _ in range(count):
            client = clients.enter_context(connect_queued(path))
            if line is not None:
                client.sendall(line)
        yield


def start_controlled(spawn, unix_dir, *args, workers=2):
    """start_prefork() serving Echo with --control unix_dir/ctl:
    (process, address, control path)."""
    path = os.path.join(unix_dir, "ctl")
    process, addresses = start_prefork(spawn, "--control", path, *args, APP, workers=workers)
    return process, addresses[0], path


def assert_unharmed(process, path, address, workers=2):
    """The master still runs, answers a status from a new client within 1 s,
    lists exactly its live children as its `workers` workers, and they serve."""
    assert process.popen.poll() is None, "the master exited"
    started = time.monotonic()
    answer = control(path, "status", timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert answer["ok"] is True, answer

    def agrees():  # (a worker exiting right now may be seen gone here, not yet reaped there)
        status = control(path, "status", timeout=1.0)
        pids = {worker["pid"] for worker in status["workers"]}
        return len(pids) == workers and pids == live_children(process.pid) and pids
    pids = wait_for(agrees, timeout=1, message=f"the status to list {workers} live workers")
    assert ask(address)["pid"] in pids


def status_table(result):
    """`prefork status`'s output: (header lines, {pid: row cells}); exit 0 expected."""
    assert result.returncode == 0 and result.stderr == "", result
    header, _, table = result.stdout.rstrip("\n").partition("\n\n")
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["WORKER", "PID", "GEN", "STATE", "REQUESTS", "REQUEST", "RSS", "CPU%",
                       "AGE"], rows[0]
    return header.splitlines(), {int(row[1]): row for row in rows[1:]}


def assert_not_running(result, path):
    """`prefork status|ctl` with no master at path: one line, exit status 1."""
    assert_one_line_error(result, re.compile(rf"no prefork master at {re.escape(path)} \(.+\)"))


# -- 1. every command over the raw socket ------------------------------------------

@pytest.mark.timeout(20)
def test_status_describes_the_master_and_its_real_children(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    answer = control(path, "status")
    assert answer["ok"] is True
    master = answer["master"]
    assert master["pid"] == process.pid
    assert (master["generation"], master["state"], master["workers"]) == (1, "serving", 2)
    assert master["listeners"] == [f"127.0.0.1:{address[1]}"]
    assert master["uptime"] >= 0
    workers = answer["workers"]
    assert [worker["number"] for worker in workers] == [1, 2]
    assert {worker["pid"] for worker in workers} == live_children(process.pid)
    for worker in workers:
        assert set(worker) == WORKER_FIELDS, worker
        assert (worker["generation"], worker["state"], worker["requests"],
                worker["request_age"]) == (1, "idle", 0, None), worker
        assert isinstance(worker["rss"], int) and worker["rss"] > 1_000_000, worker
        assert isinstance(worker["cpu_percent"], float) and worker["cpu_percent"] >= 0
        assert 0 <= worker["age"] <= master["uptime"] + 0.1, worker


@pytest.mark.timeout(20)
def test_status_counts_the_requests_served_and_their_rate(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    served = [ask(address, f"request{i}")["pid"] for i in range(30)]
    # A worker counts a request once it has answered it: wait for the slots.
    # The rate is measured over at least half a second: wait for that too.
    answer = wait_for(lambda: (a := control(path, "status"))["master"]["requests"] >= 30
                      and a["master"]["uptime"] >= 1.0 and a,
                      timeout=3, message="30 requests counted, the master up 1 s")
    assert answer["master"]["requests"] == 30
    assert answer["master"]["requests_per_second"] > 0
    by_pid = {worker["pid"]: worker["requests"] for worker in answer["workers"]}
    assert by_pid == {pid: served.count(pid) for pid in by_pid}
    assert sum(by_pid.values()) == 30


@pytest.mark.timeout(20)
def test_status_shows_a_busy_worker_and_its_request_age(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with connect(address) as slow:
        slow.sendall(b"half a line")  # the worker waits in readline(): busy

        def busy():
            answer = control(path, "status")
            return [w for w in answer["workers"] if w["state"] == "busy"
                    and w["request_age"] is not None and w["request_age"] > 0.1]
        [worker] = wait_for(busy, timeout=3, message="a busy worker in the status")
        slow.sendall(b"\n")
        assert recv_line(slow).startswith(b"echo half a line ")


@pytest.mark.timeout(20)
def test_workers_command_scales_up_then_down(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    assert control(path, "workers 3") == {"ok": True, "workers": 3}
    wait_log(process, "Booted worker 3 ")
    answer = wait_for(lambda: (a := control(path, "status")) and len(a["workers"]) == 3 and a,
                      timeout=3, message="3 workers in the status")
    assert answer["master"]["workers"] == 3
    assert {worker["pid"] for worker in answer["workers"]} == live_children(process.pid)
    assert control(path, "workers 1") == {"ok": True, "workers": 1}
    wait_for(lambda: len(live_children(process.pid)) == 1, timeout=5,
             message="the master down to one worker")
    assert_unharmed(process, path, address, workers=1)
    assert control(path, "status")["master"]["workers"] == 1


@pytest.mark.timeout(20)
def test_reload_command_starts_a_new_generation_as_hup_does(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    answer = control(path, "reload")
    assert answer["ok"] is True, answer
    wait_log(process, "Reloading: starting generation 2")  # HUP's own path
    new = wait_reloaded(process, 2, 2)
    # (the old workers may be listed until the master's next turn reaps them)
    status = wait_for(lambda: (s := control(path, "status")) and len(s["workers"]) == 2 and s,
                      timeout=2, message="only the new generation in the status")
    assert status["master"]["generation"] == 2
    assert {worker["pid"]: worker["generation"] for worker in status["workers"]} == \
        {pid: 2 for pid in new}
    assert ask(address)["pid"] in new


@pytest.mark.timeout(20)
def test_stop_command_is_graceful(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with connect(address) as slow:
        slow.sendall(b"slow")  # a request in flight: its worker waits for the line end
        [busy] = wait_for(lambda: [w["pid"] for w in control(path, "status")["workers"]
                                   if w["state"] == "busy"], timeout=3, message="a busy worker")
        answer = control(path, "stop")
        assert answer["ok"] is True, answer
        wait_log(process, "Stopping (graceful)")
        # The idle worker leaves; the busy one finishes its request first.
        wait_for(lambda: live_children(process.pid) == {busy}, timeout=5,
                 message="only the busy worker left")
        assert process.popen.poll() is None
        slow.sendall(b" request\n")
        reply = recv_line(slow).decode()
        assert reply.startswith("echo slow request ") and f"pid={busy} " in reply, reply
    assert process.wait(10) == 0
    assert not os.path.exists(path)


@pytest.mark.timeout(20)
def test_stop_quick_command_exits_at_once(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with connect(address) as slow:
        slow.sendall(b"never finished")
        wait_for(lambda: any(w["state"] == "busy" for w in control(path, "status")["workers"]),
                 timeout=3, message="a busy worker")
        started = time.monotonic()
        answer = control(path, "stop --quick")
        assert answer["ok"] is True, answer
        code = process.wait(3)
        assert time.monotonic() - started < 3
        assert code == 0, process.output()
        assert recv_all(slow) == b""  # its request was cut short, unanswered
    assert "Stopping (quick)" in process.output()


@pytest.mark.timeout(20)
def test_reopen_command_reopens_the_log_files(spawn, unix_dir, tmp_path):
    log_path = str(tmp_path / "error.log")
    path = os.path.join(unix_dir, "ctl")
    process = spawn_prefork(spawn, "-w", "2", "-b", "127.0.0.1:0", "--control", path,
                            "--error-logfile", log_path, APP)
    wait_lines(log_path, "Booted worker", count=2)
    [address] = logged_addresses(file_lines(log_path))
    os.rename(log_path, log_path + ".1")  # as logrotate does
    answer = control(path, "reopen")
    assert answer["ok"] is True, answer
    # The master and each worker reopen theirs: a new file at the path says so.
    wait_lines(log_path, "reopened log files", count=3, timeout=5)
    assert_unharmed(process, path, address)


# -- 2. faults: the master keeps supervising and answering ----------------------------

@pytest.mark.timeout(20)
def test_a_silent_client_is_closed_and_others_are_served_meanwhile(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with connect(path) as silent:
        connected = time.monotonic()
        assert control(path, "status", timeout=1.0)["ok"] is True
        assert time.monotonic() - connected < 0.5  # not queued behind the silent one
        answer = read_answer(silent)
        waited = time.monotonic() - connected
        assert answer["ok"] is False and "no command" in answer["error"], answer
        assert 1.5 <= waited <= 3.5, waited
        assert recv_all(silent) == b""  # then closed
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_garbage_bytes_get_an_error_answer(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    answer = control(path, b"\x00\xff\xfe\x80\xc3( status \x1b[2J")
    assert answer["ok"] is False and answer["error"], answer
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_an_unknown_command_gets_an_error_answer(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    for line in ("bogus", "status please", "", "stop --now"):
        answer = control(path, line)
        assert answer["ok"] is False and answer["error"], (line, answer)
    assert "bogus" in control(path, "bogus")["error"]
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_bad_worker_counts_get_an_error_answer(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    for count in ("0", "999", "abc", "-1"):
        answer = control(path, f"workers {count}")
        assert answer["ok"] is False, answer
        assert count in answer["error"] and f"max_workers ({MAX_WORKERS})" in answer["error"]
    assert control(path, "status")["master"]["workers"] == 2
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_a_one_megabyte_line_is_too_long(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with connect(path) as client:
        def send():
            try:
                client.sendall(b"status " + b"x" * 2**20 + b"\n")
            except OSError:
                pass  # the master answered and closed without reading it all
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = read_answer(client)
        assert answer["ok"] is False, answer
        assert re.search(r"too long|longer than \d+ bytes", answer["error"]), answer
        client.shutdown(2)  # (unblocks the sender, if the master still holds the socket)
        sender.join(5)
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_clients_that_never_read_their_answer_do_not_harm_the_master(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with queued_clients(path, 50, b"status\n"):  # and never read
        assert_unharmed(process, path, address)
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_more_than_32_waiting_clients_are_turned_away(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    with queued_clients(path, 32):  # silent: each waits for its line
        for _ in range(3):
            with connect_queued(path) as extra:
                assert read_answer(extra) == {"ok": False, "error": "too many clients"}
    # Their seats free up as they leave: a new client is served again at once.
    wait_for(lambda: control(path, "status", timeout=1.0)["ok"], timeout=1,
             message="a status answered once the waiting clients left")
    assert_unharmed(process, path, address)


NOBODY_CLIENT = """\
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print("connect failed", error.errno)
    sys.exit(0)
try:
    sock.sendall(b"status\\n")
except OSError:
    pass  # refused at once, before reading: the answer is there all the same
print(sock.makefile("rb").readline().decode().strip())
"""


def nobodys_python():
    """A Python user nobody can run; the test skips, saying why, without one."""
    python = python_runnable_as(AS_NOBODY)
    if python is None:
        pytest.skip("no Python here runs as user nobody (the interpreter may lie under "
                    "/root, or need a shared library it cannot load then)")
    return python


def as_nobody(*args):
    """Run a Python with args as user nobody (setpriv): its stdout, stripped."""
    result = run_prefork(*args, command=[*AS_NOBODY, nobodys_python()])
    assert result.returncode == 0, result
    return result.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
@pytest.mark.timeout(20)
def test_a_client_of_another_uid_is_refused(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    os.chmod(unix_dir, 0o755)  # only the socket's own mode stands in the way
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = as_nobody("-c", NOBODY_CLIENT, path)
    assert first == "connect failed 13" or json.loads(first)["error"].startswith(
        "permission denied"), first
    # Past the file mode, the master's own check (SO_PEERCRED) refuses.
    os.chmod(path, 0o666)
    answer = json.loads(as_nobody("-c", NOBODY_CLIENT, path))
    assert answer["ok"] is False and answer["error"].startswith("permission denied: "), answer
    assert_unharmed(process, path, address)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
@pytest.mark.timeout(20)
def test_status_command_refused_by_the_master_is_one_line(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    os.chmod(unix_dir, 0o755)
    os.chmod(path, 0o666)
    result = run_prefork("status", "--control", path,
                         command=[*AS_NOBODY, nobodys_python(), "-m", "prefork"])
    assert_one_line_error(result, re.compile(r"permission denied: .+"))


@pytest.mark.timeout(10)
def test_a_refusal_sent_before_the_command_is_read_is_the_answer(unix_dir):
    # The master refuses a connection from another user at once, unread
    # (ControlServer.verify_request), and closes it: a client still sending
    # gets EPIPE, and must still read the refusal waiting for it -- else
    # `prefork status` ends in a BrokenPipeError traceback (seen in a suite
    # run, test_status_command_refused_by_the_master_is_one_line).  A command
    # larger than the socket's buffer keeps the client sending until the
    # close, every time; the listener here answers as the master's refuse().
    path = os.path.join(unix_dir, "refusing.sock")
    refusal = {"ok": False, "error": "permission denied: not the master's user"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)

        def refuse_unread():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(json.dumps(refusal).encode() + b"\n")

        refuser = threading.Thread(target=refuse_unread)
        refuser.start()
        try:
            assert prefork.control.query(path, "x" * 4_000_000) == refusal
        finally:
            refuser.join()


# -- 3. prefork status, prefork ctl -----------------------------------------------

@pytest.mark.timeout(20)
def test_status_command_prints_a_table(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    for i in range(5):
        ask(address, f"request{i}")
    wait_for(lambda: control(path, "status")["master"]["requests"] == 5, timeout=2,
             message="5 requests counted")
    header, rows = status_table(run_prefork("status", "--control", path))
    assert re.fullmatch(rf"prefork master {process.pid}: serving, up \d+s, generation 1, "
                        r"workers wanted: 2", header[0]), header
    assert header[1] == f"listening: 127.0.0.1:{address[1]}"
    assert re.fullmatch(r"requests: 5 served, \d+\.\d/s over the last minute", header[2]), header
    assert set(rows) == live_children(process.pid)
    for pid, row in rows.items():
        assert row[2:4] == ["1", "idle"], row
    assert sum(int(row[4]) for row in rows.values()) == 5


@pytest.mark.timeout(20)
def test_status_json_has_the_same_facts(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    answer = status_json("--control", path)
    assert answer["ok"] is True
    assert (answer["master"]["pid"], answer["master"]["generation"]) == (process.pid, 1)
    assert answer["master"]["listeners"] == [f"127.0.0.1:{address[1]}"]
    assert {worker["pid"] for worker in answer["workers"]} == live_children(process.pid)
    assert all(set(worker) == WORKER_FIELDS for worker in answer["workers"])


@pytest.mark.timeout(20)
def test_status_watch_redraws_in_place(spawn, unix_dir):
    if sigint_is_ignored():  # (Ctrl-C is how a watch ends)
        pytest.skip("SIGINT is ignored in this environment")
    process, address, path = start_controlled(spawn, unix_dir)
    watch = spawn_prefork(spawn, "status", "--watch", "0.2", "--control", path)
    watch.readline_until(lambda _: "".join(watch.lines).count("prefork master") >= 4,
                         timeout=5)
    os.kill(watch.pid, signal.SIGINT)
    assert watch.wait(5) == 0
    output = watch.output()
    assert "Traceback" not in output, output
    frames = output.count("\x1b[Hprefork master")
    assert frames >= 4, output
    # One full-screen clear, before the first frame; then home + clear-to-end only.
    assert output.count("\x1b[2J") == 1
    assert output.index("\x1b[2J") < output.index("prefork master")
    assert output.count("\x1b[J") >= frames - 1
    assert f"prefork master {process.pid}: serving" in output


@pytest.mark.timeout(20)
def test_status_of_a_stopped_server_is_one_line(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    terminate(process)
    assert_not_running(run_prefork("status", "--control", path), path)
    assert_not_running(run_prefork("ctl", "reload", "--control", path), path)
    never = os.path.join(unix_dir, "never.ctl")
    assert_not_running(run_prefork("status", "--control", never), never)


@pytest.mark.timeout(20)
def test_ctl_commands_answer_json_or_one_line(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    result = run_prefork("ctl", "workers", "3", "--control", path)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert json.loads(result.stdout) == {"ok": True, "workers": 3}
    wait_log(process, "Booted worker 3 ")

    assert_one_line_error(run_prefork("ctl", "bogus", "--control", path),
                          re.compile(r".*bogus.*"))
    assert_one_line_error(run_prefork("ctl", "workers", "999", "--control", path),
                          re.compile(rf".*max_workers \({MAX_WORKERS}\).*"))
    assert_unharmed(process, path, address, workers=3)


# -- 4. the default control path ------------------------------------------------------

@pytest.mark.timeout(20)
def test_default_control_socket_is_beside_the_pidfile(spawn, tmp_path):
    pidfile = str(tmp_path / "app.pid")
    path = str(tmp_path / "app.ctl")
    process, [address] = start_prefork(spawn, "--pid", pidfile, APP)
    assert any(f"Control socket: {path}\n" in line for line in process.lines), process.lines
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    # The client finds it from the same --pid.
    header, rows = status_table(run_prefork("status", "--pid", pidfile))
    assert header[0].startswith(f"prefork master {process.pid}: serving")
    assert set(rows) == live_children(process.pid)
    terminate(process)
    assert not os.path.exists(path)


@pytest.mark.timeout(20)
def test_default_control_socket_in_xdg_runtime_dir(spawn, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    path = str(tmp_path / "prefork-myapp.ctl")
    process, _ = start_prefork(spawn, "--name", "myapp", APP, env=env)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert control(path, "status")["master"]["pid"] == process.pid
    assert status_json("--name", "myapp", env=env)["master"]["pid"] == process.pid
    terminate(process)
    assert not os.path.exists(path)


@pytest.mark.timeout(20)
def test_a_second_master_on_the_same_control_path_refuses_to_start(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    result = run_prefork("-b", "127.0.0.1:0", "--control", path, APP)
    # (with --control given, suggesting --name NAME is optional: the name would not move it)
    assert_one_line_error(result, re.compile(
        rf"control socket {re.escape(path)}: another prefork master answers there; "
        r"give this one --control PATH( or --name NAME)?"))
    assert_unharmed(process, path, address)


@pytest.mark.timeout(20)
def test_a_stale_control_socket_is_replaced(spawn, unix_dir):
    process, address, path = start_controlled(spawn, unix_dir)
    process.stop(signal.SIGKILL)  # no cleanup: the socket file stays
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    again, address, path = start_controlled(spawn, unix_dir)
    assert control(path, "status")["master"]["pid"] == again.pid
    assert_unharmed(again, path, address)
