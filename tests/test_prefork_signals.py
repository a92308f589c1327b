"""The prefork master's signals, on a real process tree: HUP reloads under
load, TTIN/TTOU, graceful (TERM) and quick (INT, QUIT) stops, shutdown() from
another thread, block_on_close, USR1 log reopening -- and never a zombie.

Every server is tests/apps/serve.py run as a real process (support.start_app);
requests are tests/apps/commands.py's one-line commands over 127.0.0.1.
"""

import os
import shutil
import signal
import time

import psutil
import pytest

from support import (
    APPS, Load, Requests, assert_no_zombies, assert_replies, assert_tree_gone, children,
    closed_seconds, echo, live_children, port_is_free, process_tree, request, set_version,
    start_app, started_requests, wait_for)

QUICK = ("--set", "graceful_timeout=5", "--set", "boot_timeout=5")


# -- reload, scale ---------------------------------------------------------------

def reload_to(process, address, module_path, started_path, versions, generation):
    """Rewrite the handler's module, HUP the master; wait until the new generation
    runs the new code and every worker of the old one has exited -- the old one's
    request in flight finished first."""
    old_version, new_version = versions
    old_workers = [psutil.Process(pid) for pid in live_children(process.pid)]
    slow = Requests(address, "sleep 0.5", 1)
    started_requests(started_path, generation - 1)  # one slow request per reload
    set_version(module_path, old_version, new_version)
    os.kill(process.pid, signal.SIGHUP)
    wait_for(lambda: request(address, "version").split()[1] == new_version,
             message=f"VERSION {new_version!r} to answer")
    wait_for(lambda: echo(address).generation == generation, message=f"generation {generation}")
    assert_tree_gone(old_workers)
    assert_no_zombies(process.pid)
    assert_replies(slow, "slept")
    for _ in range(4):
        assert echo(address).generation == generation


def test_two_reloads_under_load_lose_nothing_and_run_new_code(spawn, started_file, unix_dir):
    path, env = started_file
    module_path = os.path.join(unix_dir, "reloadable_commands.py")
    shutil.copy(os.path.join(APPS, "commands.py"), module_path)
    process, address = start_app(spawn, "--path", unix_dir, "--set", "workers=2", *QUICK,
                                 "--handler", "reloadable_commands:StreamCommands", env=env)
    assert request(address, "version").split()[1] == "v1"
    assert echo(address).generation == 1

    with Load(address, limit=1000, pace=0.002) as load:
        load.wait_for_replies(10, "load to start")
        reload_to(process, address, module_path, path, ("v1", "version-2"), generation=2)
        reload_to(process, address, module_path, path, ("version-2", "version-three"),
                  generation=3)
        load.wait_for_replies(10, "load after the reloads")

    assert load.failures == []
    assert load.sent < load.limit, "the load must run through both reloads"
    assert load.generations == {1, 2, 3}
    assert len(live_children(process.pid)) == 2
    assert process.stop(signal.SIGTERM) == 0


def test_ttin_and_ttou_change_the_worker_count(spawn):
    process, address = start_app(spawn, "--set", "workers=2", *QUICK)
    wait_for(lambda: len(live_children(process.pid)) == 2, message="2 workers")
    with Load(address, limit=1000, pace=0.002) as load:
        os.kill(process.pid, signal.SIGTTIN)
        wait_for(lambda: len(live_children(process.pid)) == 3, message="3 workers")
        assert_no_zombies(process.pid)
        os.kill(process.pid, signal.SIGTTOU)
        wait_for(lambda: len(children(process.pid)) == 2, message="back to 2 workers")
        assert_no_zombies(process.pid)
        load.wait_for_replies(10, "load after TTOU")
    assert load.failures == []
    assert process.stop(signal.SIGTERM) == 0


# -- stopping --------------------------------------------------------------------

SLOW = 2.0  # seconds each slow request takes


@pytest.mark.parametrize("mixin", ["sync", "threading"])
@pytest.mark.parametrize("block_on_close", [True, False])
def test_sigterm_finishes_requests_in_flight(spawn, started_file, mixin, block_on_close):
    """Graceful stop: every slow request completes, the master exits 0, the whole
    tree is gone and the port is free.  server_close() waits for the workers with
    block_on_close, and returns at once without (the workers finish on their own)."""
    path, env = started_file
    count = 2 if mixin == "sync" else 4  # sync: one request per worker at a time
    process, address = start_app(spawn, "--mixin", mixin, "--set", "workers=2", *QUICK,
                                 "--set", f"block_on_close={block_on_close}", env=env)
    slow = Requests(address, f"sleep {SLOW}", count)
    starts = started_requests(path, count)
    tree = process_tree(process.pid)
    assert len(tree) == 3

    os.kill(process.pid, signal.SIGTERM)
    process.readline_until(lambda line: "Stopping (graceful)" in line)
    remaining = max(starts) + SLOW - time.monotonic()  # at the latest, once serving stopped
    closed = closed_seconds(process)
    assert process.wait() == 0

    if block_on_close:
        assert closed >= remaining - 0.1, (closed, remaining)
    else:
        assert closed < 0.5, closed
    assert_replies(slow, "slept")
    assert_tree_gone(tree)
    wait_for(lambda: port_is_free(address), timeout=2, message="the port to be free")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_sigint_and_sigquit_stop_quickly(spawn, started_file, sig):
    path, env = started_file
    process, address = start_app(spawn, "--set", "workers=2", *QUICK, env=env)
    hanging = Requests(address, "hang", 1)
    started_requests(path, 1)
    tree = process_tree(process.pid)

    began = time.monotonic()
    os.kill(process.pid, sig)
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - began < 2
    assert hanging.results() == [""]  # the connection closed unanswered
    assert_tree_gone(tree, timeout=2)


def test_shutdown_from_another_thread_is_graceful(spawn, started_file, unix_dir):
    path, env = started_file
    control = os.path.join(unix_dir, "control")
    process, address = start_app(spawn, "--set", "workers=2", *QUICK,
                                 "--control", control, env=env)
    slow = Requests(address, "sleep 1", 1)
    started_requests(path, 1)
    tree = process_tree(process.pid)

    assert request(control, "shutdown").startswith("done ")
    closed_seconds(process)
    assert process.wait() == 0
    assert_replies(slow, "slept")
    assert_tree_gone(tree)


# -- log files -------------------------------------------------------------------

def log_pids(path, message):
    """pids of the processes that logged `message` in the log file at `path`."""
    try:
        with open(path) as f:
            return {int(line.split("] [", 2)[1]) for line in f if message in line}
    except FileNotFoundError:
        return set()


def test_usr1_reopens_log_files_in_master_and_workers(spawn, unix_dir):
    log_file = os.path.join(unix_dir, "prefork.log")
    process, address = start_app(spawn, "--set", "workers=2", *QUICK, "--log-file", log_file)
    workers = wait_for(lambda: len(log_pids(log_file, "Booted worker")) == 2
                       and log_pids(log_file, "Booted worker"), message="2 workers booted")
    assert workers == live_children(process.pid)

    os.rename(log_file, log_file + ".1")
    os.kill(process.pid, signal.SIGUSR1)
    everyone = {process.pid, *workers}
    wait_for(lambda: log_pids(log_file, "reopened log files") == everyone,
             message="every process to reopen its log file")
    assert echo(address).pid in workers
    assert process.stop(signal.SIGTERM) == 0
    assert log_pids(log_file, "Stopping") == {process.pid}  # the master logs to the new file
