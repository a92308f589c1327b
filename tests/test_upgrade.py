"""USR2 in the real `prefork` command: the binary upgrade (prefork/upgrade.py,
issue 10 point 4), as nginx's.

The old master forks and execs its own command line with its listening
sockets inherited; the new master boots its workers and serves beside it on
the same sockets; TERM to the old master finishes the hand-over.  The pidfile
and the control socket move to PATH.oldbin for the old master; if the new
master fails, they move back and the old master serves on, saying so.

Checked here, under continuous load on a TCP port and a Unix socket: no
request lost across an upgrade nor across one whose new code fails to
import; the files at each step; both masters' workers answering during the
overlap, then only the new one's; a second USR2 and a USR2 during a stop
ignored; MAINPID= and READY=1 from the new master under systemd's notify
protocol; the new master reloading (HUP) and upgrading again by itself.

Each test runs a copy of tests/apps/command_apps.py (its Echo handler) in
tmp_path, on a fixed free port and a Unix socket in unix_dir, with --pid in
tmp_path and --control in unix_dir.  The new master is the old one's child:
once the old one has exited, this test process adopts it (it is made a child
subreaper for the test) so that the new master's exit status can be read.
"""

import contextlib
import os
import signal

import psutil
import pytest

from support import (
    Load, ask, ask_on, assert_tree_gone, booted_workers, connect, connection_holder, copy_app,
    exit_code, file_lines, free_port, live_children, notify_receiver, recv_notification,
    start_prefork, status_json, wait_booted, wait_for, wait_log, write_config)

# Every test: this process adopts a new master once its old one has exited
# (conftest.py's subreaper, set up before spawn), for exit_code().
pytestmark = pytest.mark.usefixtures("subreaper")

# -- helpers -----------------------------------------------------------------------------

class Server:
    """The command serving command_apps:Echo from tmp_path on 127.0.0.1:port
    and a Unix socket, with a pidfile and a control socket: the paths, the
    Process of the (first, old) master, its pid, and its first workers' pids.
    env: added to the master's environment (its new masters inherit it)."""

    def __init__(self, spawn, tmp_path, unix_dir, workers=2, env=None, args=()):
        self.module = copy_app(tmp_path)
        self.tcp = ("127.0.0.1", free_port())
        self.unix = os.path.join(unix_dir, "echo.sock")
        self.pidfile = os.path.join(tmp_path, "prefork.pid")
        self.control = os.path.join(unix_dir, "ctl")
        self.process, _ = start_prefork(
            spawn, "-b", f"127.0.0.1:{self.tcp[1]}", "-b", f"unix:{self.unix}",
            "--pid", self.pidfile, "--control", self.control, *args, "command_apps:Echo",
            workers=workers, cwd=str(tmp_path),
            env={"XDG_RUNTIME_DIR": unix_dir, **(env or {})})
        self.pid = self.process.pid
        self.workers = set(booted_workers(self.process.lines))

    def usr2(self, pid=None):
        """USR2 to the old master (or pid): the new master's pid, from the
        line that says it was started."""
        os.kill(pid or self.pid, signal.SIGUSR2)
        line = self.log(pid or self.pid, "Upgrade: started a new master (pid ")
        return int(line.split("(pid ", 1)[1].split(")", 1)[0])

    def log(self, pid, *fragments):
        """The next line logged by process pid that contains every fragment."""
        return wait_log(self.process, f"] [{pid}] [", *fragments)

    def new_master_serving(self, new, old=None, workers=2):
        """Wait for the new master's "serving beside" line and for its
        workers' boots; return their pids (checked to be its children)."""
        start = len(self.process.lines)
        self.log(new, "[INFO] Upgrade: serving beside the old master "
                      f"(pid {old or self.pid}); TERM it to finish")
        wait_booted(self.process, workers, since=start)
        pids = set(booted_workers(self.process.lines[start:]))
        assert live_children(new) == pids
        return pids

    def status(self, control=None):
        """`prefork status --json` on the control socket (default: --control):
        its answer, a dict."""
        return status_json("--control", control or self.control)

    def pidfile_pid(self, suffix=""):
        return int(file_lines(self.pidfile + suffix)[0])

    def load(self):
        """A support.Load on both of its addresses (two threads each, 2 ms
        apart) whose replies are the pids of the workers that answered."""
        return Load([self.tcp, self.unix], pace=0.002, client=answering_pid)


def answering_pid(address, words):
    """The pid of the worker that answered words (command_apps.Echo)."""
    return ask(address, words)["pid"]


def answered_by(load, phase):
    """The worker pids that answered the requests of a Server.load() sent in phase."""
    return set(load.replies_to(phase))


# -- the hand-over ------------------------------------------------------------------------

@pytest.mark.timeout(40)
def test_an_upgrade_under_load_loses_no_request_and_moves_the_files(spawn, tmp_path, unix_dir):
    server = Server(spawn, tmp_path, unix_dir)
    old = server.pid
    old_workers = [psutil.Process(pid) for pid in server.workers]
    assert server.pidfile_pid() == old

    with server.load() as load:
        load.wait_for_replies(20, "the load to flow")
        load.phase = "upgrading"
        new = server.usr2()
        new_workers = server.new_master_serving(new)
        load.phase = "overlap"

        # The files, as nginx moves them: the old master's under .oldbin.
        assert server.pidfile_pid() == new
        assert server.pidfile_pid(".oldbin") == old
        assert os.path.exists(server.control + ".oldbin")
        assert server.status()["master"]["pid"] == new
        assert server.status(server.control + ".oldbin")["master"]["pid"] == old
        # Both pools accept on the same sockets.
        wait_for(lambda: answered_by(load, "overlap") & server.workers
                 and answered_by(load, "overlap") & new_workers,
                 message="answers from both masters' workers during the overlap")

        os.kill(old, signal.SIGTERM)
        assert server.process.wait(10) == 0
        assert_tree_gone(old_workers)
        load.phase = "after"
        load.wait_for_replies(20, "answers after the upgrade", phase="after")
    assert load.failures == []
    assert answered_by(load, "overlap") <= server.workers | new_workers
    assert answered_by(load, "after") <= new_workers

    server.log(old, "[INFO] Upgrade: handed over to the new master (pid %d)" % new)
    assert not os.path.exists(server.pidfile + ".oldbin")
    assert not os.path.exists(server.control + ".oldbin")
    assert server.pidfile_pid() == new
    assert server.status()["master"]["pid"] == new
    assert os.path.exists(server.unix)  # the new master's now: left in place
    assert ask(server.unix)["pid"] in new_workers
    assert ask(server.tcp)["pid"] in new_workers

    tree = [psutil.Process(pid) for pid in (new, *new_workers)]
    os.kill(new, signal.SIGTERM)
    assert exit_code(new) == 0, "".join(server.process.lines)
    assert_tree_gone(tree)
    assert not os.path.exists(server.unix)
    assert not os.path.exists(server.pidfile)
    assert not os.path.exists(server.control)
    assert "Traceback" not in server.process.output()


@pytest.mark.timeout(30)
def test_an_upgrade_whose_code_fails_to_import_leaves_the_old_master_serving(
        spawn, tmp_path, unix_dir):
    server = Server(spawn, tmp_path, unix_dir)
    old = server.pid
    with open(server.module, "a") as module:  # a broken deploy, after the start
        module.write('\nraise RuntimeError("broken deploy")\n')

    with server.load() as load:
        load.wait_for_replies(20, "the load to flow")
        load.phase = "upgrading"
        new = server.usr2()
        server.log(old, f"[ERROR] Upgrade failed: the new master (pid {new}) exited with "
                        f"code 1; this master (pid {old}) keeps serving")
        load.phase = "after"
        load.wait_for_replies(20, "answers after the upgrade", phase="after")
    assert load.failures == []
    assert answered_by(load, "upgrading") | answered_by(load, "after") <= server.workers

    # The files are back under their names.
    assert server.pidfile_pid() == old
    assert not os.path.exists(server.pidfile + ".oldbin")
    assert not os.path.exists(server.control + ".oldbin")
    assert server.status()["master"]["pid"] == old
    assert not psutil.pid_exists(new)  # reaped by the old master
    assert live_children(old) == server.workers

    tree = [psutil.Process(pid) for pid in (old, *server.workers)]
    os.kill(old, signal.SIGTERM)
    assert server.process.wait(10) == 0, server.process.output()
    assert_tree_gone(tree)
    for path in (server.pidfile, server.control, server.unix):
        assert not os.path.exists(path), path


@pytest.mark.timeout(30)
def test_an_upgrade_whose_workers_cannot_boot_leaves_the_old_master_serving(
        spawn, tmp_path, unix_dir):
    # The new master starts and takes the sockets, but its workers fail: its
    # exit must leave the old master's socket files alone.
    conf = write_config(tmp_path / "prefork_conf.py", "boot_timeout = 5\n")
    server = Server(spawn, tmp_path, unix_dir, args=("-c", conf))
    old = server.pid
    write_config(conf, "boot_timeout = 5\n"
                       "def post_fork(server, worker):\n"
                       "    raise RuntimeError('broken deploy')\n")

    with server.load() as load:
        load.wait_for_replies(20, "the load to flow")
        load.phase = "upgrading"
        new = server.usr2()
        line = server.log(old, "Upgrade failed: the new master (pid %d) exited with code" % new)
        assert line.rstrip().endswith(f"; this master (pid {old}) keeps serving"), line
        load.phase = "after"
        load.wait_for_replies(20, "answers after the upgrade", phase="after")
    assert os.path.exists(server.unix), "the failed new master removed the old one's socket"
    assert load.failures == []
    assert answered_by(load, "after") <= server.workers
    assert server.pidfile_pid() == old
    assert os.path.exists(server.control) and not os.path.exists(server.control + ".oldbin")
    assert server.status()["master"]["pid"] == old
    # It never served: it must not have told the operator to TERM the old master.
    assert not [line for line in server.process.lines if "Upgrade: serving beside" in line]


# -- USR2 ignored -------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_second_usr2_while_the_new_master_runs_is_ignored(spawn, tmp_path, unix_dir):
    server = Server(spawn, tmp_path, unix_dir)
    old = server.pid
    new = server.usr2()
    new_workers = server.new_master_serving(new)

    os.kill(old, signal.SIGUSR2)
    server.log(old, f"[WARNING] USR2 ignored: the new master (pid {new}) is still running")
    # Nothing else: no third master, the files where the first USR2 put them.
    assert live_children(old) == server.workers | {new}
    assert live_children(new) == new_workers
    assert sum("Starting prefork master" in line for line in server.process.lines) == 2
    assert server.pidfile_pid() == new
    assert server.pidfile_pid(".oldbin") == old
    assert server.status()["master"]["pid"] == new
    assert server.status(server.control + ".oldbin")["master"]["pid"] == old


@pytest.mark.timeout(30)
def test_usr2_during_a_graceful_stop_is_ignored(spawn, tmp_path, unix_dir):
    server = Server(spawn, tmp_path, unix_dir, workers=1)
    old = server.pid
    # A connection held by the worker (Echo waits for its line) keeps the stop going.
    with connect(server.tcp) as held:
        wait_for(lambda: connection_holder(held, server.workers),
                 message="the worker to take the client")
        os.kill(old, signal.SIGTERM)
        server.log(old, "Stopping (graceful)")
        os.kill(old, signal.SIGUSR2)
        server.log(old, "[INFO] Stopping (graceful): USR2 ignored")
        assert ask_on(held)["pid"] in server.workers
    assert server.process.wait(10) == 0
    output = server.process.output()
    assert "Upgrade: started" not in output and output.count("Starting prefork master") == 1
    for path in (server.pidfile, server.pidfile + ".oldbin", server.control,
                 server.control + ".oldbin", server.unix):
        assert not os.path.exists(path), path


# -- systemd ------------------------------------------------------------------------------

def notifications_with_sender(sock, until, timeout=10):
    """recv_notification() on sock (a support.notify_receiver()'s) until
    until(pid, message) is true: [(sender pid, {K: V})], that last one
    included."""
    found = []
    sock.settimeout(timeout)
    while not found or not until(*found[-1]):
        found.append(recv_notification(sock))
    return found


@pytest.mark.timeout(30)
def test_the_new_master_announces_mainpid_then_ready_to_systemd(spawn, tmp_path, unix_dir):
    with notify_receiver(unix_dir) as (notify, env):
        server = Server(spawn, tmp_path, unix_dir, env=env)
        old = server.pid
        first = notifications_with_sender(notify, lambda pid, m: "READY" in m)
        assert (old, {"MAINPID": str(old)}) in first

        new = server.usr2()
        seen = notifications_with_sender(notify, lambda pid, m: pid == new and "READY" in m)
        from_new = [message for pid, message in seen if pid == new]
        # MAINPID= first (systemd then takes the new master's notifications), READY=1 last.
        assert from_new[0] == {"MAINPID": str(new)}, seen
        assert from_new[-1]["READY"] == "1", seen
        assert all("READY" not in message for message in from_new[:-1]), seen
        # READY=1 once it serves: its workers have booted.
        workers = server.status()["workers"]
        assert len(workers) == 2 and {w["state"] for w in workers} <= {"idle", "busy"}, workers
        assert ask(server.unix)["pid"] in server.workers | {w["pid"] for w in workers}


# -- the new master, on its own ----------------------------------------------------------

@pytest.mark.timeout(40)
def test_after_the_hand_over_the_new_master_reloads_and_upgrades_itself(
        spawn, tmp_path, unix_dir):
    server = Server(spawn, tmp_path, unix_dir)
    old = server.pid
    new = server.usr2()
    server.new_master_serving(new)
    os.kill(old, signal.SIGTERM)
    assert server.process.wait(10) == 0
    server.log(old, "Upgrade: handed over to the new master")

    os.kill(new, signal.SIGHUP)
    start = len(server.process.lines)
    server.log(new, "[INFO] Reloaded: generation 2 serving")
    generation_2 = set(booted_workers(server.process.lines[start:], generation=2))
    wait_for(lambda: live_children(new) == generation_2,
             message="only generation 2 left in the new master")
    assert {ask(server.tcp)["pid"], ask(server.unix)["pid"]} <= generation_2

    newer = server.usr2(new)
    newer_workers = server.new_master_serving(newer, old=new)
    assert server.pidfile_pid() == newer
    assert server.pidfile_pid(".oldbin") == new
    assert server.status()["master"]["pid"] == newer
    # Four connections held open at once take the four sync workers of both
    # masters, one each: the newest master's among them (sequential requests
    # could all be taken by one warm worker).
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(server.unix)) for _ in range(4)]
        assert {ask_on(sock)["pid"] for sock in held} & newer_workers
