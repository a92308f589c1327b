"""systemd: socket activation and sd_notify (prefork/systemd.py, issue 10).

1. The protocols alone, over real sockets: each Notifier message as the
   datagram systemd reads (to a path and to an abstract socket), a missing
   NOTIFY_SOCKET, a dead one (logged once, never raised), the watchdog
   interval; listen_fds() in a process that really inherited descriptors 3
   and 4, and its refusals.
2. The real command under the real `systemd-socket-activate` tool (Debian's
   systemd package), on TCP, Unix stream, UDP and Unix datagram: it serves on
   systemd's socket, with no -b.
3. The real command with NOTIFY_SOCKET pointing at a datagram socket this
   test binds: READY=1 once the workers booted, RELOADING=1 then READY=1 on
   HUP, STOPPING=1 on TERM, WATCHDOG=1 while the master's loop runs.
"""

import json
import logging
import os
import shutil
import signal
import socket
import time
import uuid

import psutil
import pytest

from prefork.systemd import Notifier, listen_fds
from support import (
    APPS, PREFORK, PYTHON, ask, datagram_client, facts, free_port, notification_socket,
    notify_receiver, recv_notification, spawn_prefork, terminate, wait_booted, wait_for,
    wait_log)

# -- helpers -----------------------------------------------------------------------------

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate (Debian's systemd package) is not installed")


def monotonic_usec():
    """CLOCK_MONOTONIC now, in microseconds: what MONOTONIC_USEC= carries."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def next_notification(sock, key, master=None, timeout=10):
    """The next notification with `key` (READY, RELOADING, ...) as a dict.
    Status and watchdog ones on the way are skipped, and MAINPID= naming the
    master itself (pid `master`); any other fails: it came before the one
    expected."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            _, message = recv_notification(sock)
        except socket.timeout:
            raise AssertionError(f"no {key}= notification within {timeout}s") from None
        if key in message:
            return message
        skipped = set(message) <= {"STATUS", "WATCHDOG", "MAINPID"} and (
            message.get("MAINPID", str(master)) == str(master))
        assert skipped, f"{message} came before {key}= (master: pid {master})"


def queued_notifications(sock):
    """The notifications waiting in sock now (read without waiting)."""
    found = []
    timeout = sock.gettimeout()
    sock.setblocking(False)  # (with a timeout, recv() would wait for it)
    try:
        while True:
            found.append(recv_notification(sock)[1])
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(timeout)


def drain_output(process):
    """All the process has written so far, read without waiting, and added
    to process.lines (as one piece: search "".join(process.lines)).  Only for
    a process whose output is never read through readline_until(), whose
    buffer would hold what the pipe no longer does."""
    fd = process.popen.stdout.fileno()
    chunks = []
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.set_blocking(fd, True)
    process.lines.append(b"".join(chunks).decode())
    return "".join(process.lines)


@pytest.fixture
def notify_socket(unix_dir):
    """support.notify_receiver() in unix_dir: (socket, env)."""
    with notify_receiver(unix_dir) as (sock, env):
        yield sock, env


# -- the Notifier, alone -----------------------------------------------------------

def abstract_name():
    return f"prefork-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_each_notification_is_one_datagram_of_assignments(unix_dir, kind):
    if kind == "path":
        address = notify_env = os.path.join(unix_dir, "notify")
    else:
        name = abstract_name()
        address, notify_env = "\0" + name, "@" + name
    with notification_socket(address) as receiver:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": notify_env})
        try:
            assert notifier.ready("2 workers, generation 1") is True
            assert receiver.recv(4096) == b"READY=1\nSTATUS=2 workers, generation 1"
            notifier.ready()
            assert receiver.recv(4096) == b"READY=1"
            notifier.stopping()
            assert receiver.recv(4096) == b"STOPPING=1"
            notifier.status("serving\nfine")  # one line: a newline would start an assignment
            assert receiver.recv(4096) == b"STATUS=serving fine"
            notifier.mainpid(4242)
            assert receiver.recv(4096) == b"MAINPID=4242"
            notifier.watchdog()
            assert receiver.recv(4096) == b"WATCHDOG=1"
            notifier.send("A=1", "B=two")
            assert receiver.recv(4096) == b"A=1\nB=two"
        finally:
            notifier.close()


@pytest.mark.timeout(10)
def test_reloading_carries_the_monotonic_time_of_the_call(unix_dir):
    path = os.path.join(unix_dir, "notify")
    with notification_socket(path) as receiver:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
        before = monotonic_usec()
        notifier.reloading()
        after = monotonic_usec()
        lines = receiver.recv(4096).decode().split("\n")
        assert lines[0] == "RELOADING=1" and len(lines) == 2, lines
        name, _, value = lines[1].partition("=")
        assert name == "MONOTONIC_USEC" and before <= int(value) <= after, (before, lines, after)
        notifier.reloading("reloading")
        assert receiver.recv(4096).decode().split("\n")[2] == "STATUS=reloading"
        notifier.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_without_notify_socket_nothing_is_sent(environ, caplog):
    notifier = Notifier.from_environment(environ)
    with caplog.at_level(logging.DEBUG, logger="prefork"):
        sent = [notifier.ready("x"), notifier.reloading(), notifier.stopping(),
                notifier.status("x"), notifier.mainpid(1), notifier.watchdog()]
    assert not notifier.enabled
    assert sent == [False] * 6
    assert notifier.watchdog_interval is None
    assert caplog.records == []


@pytest.mark.timeout(10)
def test_a_dead_notify_socket_is_logged_once_and_never_raised(unix_dir, caplog):
    path = os.path.join(unix_dir, "gone")  # nothing listens there: systemd is gone
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    with caplog.at_level(logging.DEBUG, logger="prefork"):
        results = [notifier.ready("x"), notifier.watchdog(), notifier.stopping()]
    notifier.close()
    assert results == [False, False, False]
    records = [r for r in caplog.records if r.name == "prefork"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert path in records[0].getMessage()


@pytest.mark.timeout(10)
def test_a_malformed_notify_socket_is_refused_by_name():
    with pytest.raises(ValueError, match=r"NOTIFY_SOCKET='relative/path'"):
        Notifier.from_environment({"NOTIFY_SOCKET": "relative/path"})


@pytest.mark.timeout(10)
@pytest.mark.parametrize("extra, expected", [
    ({}, 1.0),
    ({"WATCHDOG_PID": str(os.getpid())}, 1.0),
    ({"WATCHDOG_PID": str(os.getppid())}, None),  # another process is watched
    ({"WATCHDOG_USEC": "0"}, None),
], ids=["any-pid", "our-pid", "other-pid", "zero"])
def test_watchdog_interval_is_half_of_watchdog_usec_for_us(unix_dir, extra, expected):
    environ = {"NOTIFY_SOCKET": os.path.join(unix_dir, "notify"),
               "WATCHDOG_USEC": "2000000", **extra}
    assert Notifier.from_environment(environ).watchdog_interval == expected


@pytest.mark.timeout(10)
def test_a_malformed_watchdog_usec_is_refused_by_name(unix_dir):
    environ = {"NOTIFY_SOCKET": os.path.join(unix_dir, "notify"), "WATCHDOG_USEC": "soon"}
    with pytest.raises(ValueError, match=r"WATCHDOG_USEC='soon'"):
        Notifier.from_environment(environ)


# -- listen_fds(), alone -------------------------------------------------------------

# Run in a process of its own, as systemd would start it: the sockets given
# (by their numbers in argv) become descriptors 3 and 4, LISTEN_PID its pid;
# it prints what listen_fds() returned and what it left, as JSON.
ACTIVATED_CHILD = """
import fcntl, json, os, socket, sys
from prefork.systemd import listen_fds

high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[1:]]  # out of the way
for fd in sys.argv[1:]:
    os.close(int(fd))
for target, fd in enumerate(high, start=3):
    os.dup2(fd, target)  # inheritable: no FD_CLOEXEC yet
    os.close(fd)
cloexec_before = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in (3, 4)]
os.environ["LISTEN_PID"] = str(os.getpid())
found = listen_fds()
report = {
    "found": found,
    "cloexec_before": cloexec_before,
    "cloexec_after": [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd, _ in found],
    "addresses": [socket.socket(fileno=os.dup(fd)).getsockname() for fd, _ in found],
    "left": sorted(name for name in os.environ if name.startswith("LISTEN_")),
}
print(json.dumps(report))
"""


def run_activated(spawn, sockets, env):
    """ACTIVATED_CHILD's report for these sockets and LISTEN_* variables."""
    fds = [sock.fileno() for sock in sockets]
    process = spawn([PYTHON, "-c", ACTIVATED_CHILD, *map(str, fds)], env=env, pass_fds=fds)
    assert process.wait(10) == 0, process.output()
    return json.loads(process.output().strip().splitlines()[-1])


@pytest.mark.timeout(15)
@pytest.mark.parametrize("names, expected", [
    ("web:jobs", ["web", "jobs"]),
    ("web", ["web", "unknown"]),
    (None, ["unknown", "unknown"]),
], ids=["named", "one-named", "unnamed"])
def test_listen_fds_takes_descriptors_from_3_with_their_names(spawn, unix_dir, names, expected):
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        dgram.bind(os.path.join(unix_dir, "dgram"))
        env = {"LISTEN_FDS": "2", **({"LISTEN_FDNAMES": names} if names else {})}
        report = run_activated(spawn, [tcp, dgram], env)
        assert report["found"] == [[3, expected[0]], [4, expected[1]]]
        assert report["addresses"] == [list(tcp.getsockname()), dgram.getsockname()]
    assert report["cloexec_before"] == [False, False]
    assert report["cloexec_after"] == [True, True]  # workers share them by fork, not by exec
    assert report["left"] == []  # a child of ours must not take them for its own


@pytest.mark.timeout(10)
def test_listen_fds_for_another_pid_is_empty_and_unset():
    environ = {"LISTEN_PID": str(os.getppid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b",
               "OTHER": "kept"}
    assert listen_fds(environ) == []
    assert environ == {"OTHER": "kept"}


@pytest.mark.timeout(10)
def test_listen_fds_without_variables_or_unset_false():
    assert listen_fds({}) == []
    environ = {"LISTEN_PID": str(os.getppid()), "LISTEN_FDS": "1"}
    assert listen_fds(environ, unset=False) == []
    assert environ == {"LISTEN_PID": str(os.getppid()), "LISTEN_FDS": "1"}
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name, value", [
    ("LISTEN_FDS", "abc"), ("LISTEN_FDS", "-1"), ("LISTEN_PID", "abc")])
def test_listen_fds_refuses_a_malformed_variable_by_name(name, value):
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", name: value}
    with pytest.raises(ValueError, match=f"{name}='{value}'"):
        listen_fds(environ)


# -- socket activation of the real command by the real tool ---------------------------

# systemd-socket-activate (without --accept) listens, waits for the first
# connection or datagram, then execs the command in its own process (so the
# command's pid is LISTEN_PID) with the listening socket as descriptor 3.  The
# first request stays queued on that socket for a worker to take.  -d applies
# to every -l.  It sets LISTEN_FDNAMES only with --fdname.

ACTIVATIONS = {
    # kind: (tool options before -l, application, stream?)
    "tcp": ((), "command_apps:Echo", True),
    "unix": ((), "command_apps:Echo", True),
    "udp": (("--datagram",), "command_apps:Upper", False),
    "unix-dgram": (("--datagram",), "command_apps:Upper", False),
}


def activated(spawn, unix_dir, kind, fdname=None):
    """Start `systemd-socket-activate [OPTIONS] -l ADDRESS python -m prefork
    -w 2 APP` for kind; return (process, address) once the tool listens."""
    options, app, _ = ACTIVATIONS[kind]
    if kind.startswith("unix"):
        address = os.path.join(unix_dir, "activated")
        listen = address
    else:
        address = ("127.0.0.1", free_port())
        listen = f"127.0.0.1:{address[1]}"
    if fdname:
        options = (*options, f"--fdname={fdname}")
    # The tool passes on only PATH, HOME, TERM and LISTEN_*: the rest with -E.
    # XDG_RUNTIME_DIR: the default control socket's directory, one of this test's own.
    keep = ["-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED", "-E", "PREFORK_CMD_ARGS=",
            "-E", f"XDG_RUNTIME_DIR={unix_dir}"]
    process = spawn([SOCKET_ACTIVATE, *options, *keep, "-l", listen,
                     *PREFORK, "-w", "2", app], cwd=APPS)
    wait_log(process, f"Listening on {listen} as 3.")  # the tool's own line
    return process, address


def logged_address(address):
    """How the master writes address in its "Listening at: " line."""
    return f"unix:{address}" if isinstance(address, str) else f"{address[0]}:{address[1]}"


def ask_datagram(address, unix_dir, text="hi"):
    """command_apps.Upper's answer to one datagram: its facts()."""
    with datagram_client(address, unix_dir) as client:
        client.sendto(text.encode(), address)
        answer = client.recv(65536).decode()
        if isinstance(address, str):
            os.unlink(client.getsockname())  # for the next client's bind
    assert answer.startswith(text.upper() + " "), answer
    return facts(answer)


@needs_socket_activate
@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_the_command_serves_on_the_socket_systemd_passed(spawn, unix_dir, kind):
    process, address = activated(spawn, unix_dir, kind)
    stream = ACTIVATIONS[kind][2]
    # The first request makes the tool exec the command; a worker answers it.
    first = ask(address) if stream else ask_datagram(address, unix_dir)
    wait_booted(process, 2)
    line = next(line for line in process.lines if "Listening at: " in line)
    # Exactly systemd's socket: no bind of its own (the default 127.0.0.1:8000).
    assert [other for other in process.lines if "Listening at: " in other] == [line]
    assert f"Listening at: {logged_address(address)} ({process.pid})" in line
    second = ask(address) if stream else ask_datagram(address, unix_dir)
    for answer in (first, second):
        assert answer["pid"] != process.pid and answer["worker"] in (1, 2), answer
    terminate(process)
    if kind.startswith("unix"):
        # The socket file is systemd's (a .socket unit keeps listening on it
        # for the next start): not prefork's to remove.
        assert os.path.exists(address)


@needs_socket_activate
@pytest.mark.timeout(30)
def test_a_socket_named_with_fdname_serves(spawn, unix_dir):
    process, address = activated(spawn, unix_dir, "tcp", fdname="web")
    ask(address)
    wait_booted(process, 2)
    line = next(line for line in process.lines
                if f"Listening at: {logged_address(address)} " in line)
    # If the line says more than "ADDRESS (pid)" (e.g. "[systemd]"), it names
    # the descriptor: LISTEN_FDNAMES=web.
    suffix = line.rstrip("\n").split(f"({process.pid})", 1)[1].strip()
    if suffix:
        assert "web" in suffix, line
    terminate(process)


# -- sd_notify from the real command -------------------------------------------------

@pytest.mark.timeout(40)
def test_ready_reloading_and_stopping_are_notified_in_order(spawn, notify_socket):
    sock, env = notify_socket
    process = spawn_prefork(spawn, "-w", "2", "-b", "127.0.0.1:0", "command_apps:Echo", env=env)

    ready = next_notification(sock, "READY", process.pid)
    output = drain_output(process)  # what was written before READY=1 arrived
    assert output.count("Booted worker") == 2, output
    status = ready.get("STATUS", "")
    assert "2" in status and "worker" in status and "generation 1" in status, ready

    before = monotonic_usec()
    os.kill(process.pid, signal.SIGHUP)
    reloading = next_notification(sock, "RELOADING", process.pid)
    after = monotonic_usec()
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after, (before, reloading, after)

    ready = next_notification(sock, "READY", process.pid)
    output = drain_output(process)
    assert "Reloaded: generation 2 serving" in output, output
    assert "generation 2" in ready.get("STATUS", ""), ready

    terminate(process)
    assert next_notification(sock, "STOPPING", process.pid)["STOPPING"] == "1"


def stopped(pid):
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


@pytest.mark.timeout(40)
def test_watchdog_is_notified_while_the_master_loop_runs(spawn, notify_socket):
    sock, env = notify_socket
    process = spawn_prefork(spawn, "-w", "2", "-b", "127.0.0.1:0", "command_apps:Echo",
                            env={**env, "WATCHDOG_USEC": "400000"})
    next_notification(sock, "READY", process.pid)

    # Every 0.2 s (half of WATCHDOG_USEC): at least 3 within a second.
    start = time.monotonic()
    pings = 0
    while (left := 1.0 - (time.monotonic() - start)) > 0:
        sock.settimeout(left)
        try:
            pings += "WATCHDOG" in recv_notification(sock)[1]
        except socket.timeout:
            break
    assert pings >= 3, f"{pings} WATCHDOG=1 in 1 s"

    # A stopped master's loop sends none: systemd will see it hang.
    os.kill(process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: stopped(process.pid), timeout=5, message="the master to stop")
        queued_notifications(sock)  # sent before it stopped
        sock.settimeout(0.6)
        with pytest.raises(socket.timeout):
            _, message = recv_notification(sock)
            pytest.fail(f"{message} from a stopped master")
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert "WATCHDOG" in next_notification(sock, "WATCHDOG", process.pid, timeout=2)
    terminate(process)
