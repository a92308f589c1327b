"""HUP in the real `prefork` command: the configuration is read again (the
config file, $PREFORK_CMD_ARGS and the original command line), checked before
anything is applied (as nginx does: a bad one is refused and the running one
stays), and applied to a new generation of workers -- the number of workers,
new application code, binds added and removed without a lost request, hooks
and the pidfile.  Restart-only settings wait for the next start.

Every server is the real command in a subprocess (support.start_prefork)
with a config file in tmp_path (-c FILE) that sets its binds and workers;
tests that rewrite the application's VERSION run a copy of
tests/apps/command_apps.py in tmp_path.
"""

import os
import signal

import pytest

from support import (
    Load, ask, ask_on, booted_workers, connect, connection_holder, copy_app, echo, facts,
    file_lines, free_port, http_get, live_children, set_version, start_prefork, taken_port,
    terminate, wait_for, wait_generation, wait_log, wait_reloaded, write_config)

# -- helpers -----------------------------------------------------------------------

QUICK = "graceful_timeout = 5\nboot_timeout = 10\n"  # a stuck stop fails fast


def settings(*ports, workers=2, extra=""):
    """A config file's text: bind to 127.0.0.1 on each of the ports (fixed
    ones, see free_port(): the file is read again), `workers` workers, QUICK,
    then extra."""
    binds = [f"127.0.0.1:{port}" for port in ports]
    return f"bind = {binds!r}\nworkers = {workers}\n{QUICK}{extra}"


def get(address):
    """GET / from command_apps.app (WSGI): its facts()."""
    status, body = http_get(address)
    assert status == 200 and body.startswith("wsgi ") and body.endswith("\n"), (status, body)
    return facts(body)


def held_by_distinct_workers(address, pids):
    """Open one connection per worker of `pids` (sync workers: each takes one
    and waits for its line); once each worker holds one, send the lines:
    the answers' facts, one per worker."""
    clients = [connect(address) for _ in pids]
    try:
        wait_for(lambda: {connection_holder(client, pids) for client in clients} == set(pids),
                 message="each worker to hold one of the connections")
        return [ask_on(client) for client in clients]
    finally:
        for client in clients:
            client.close()


def error_lines(process):
    """The ERROR lines of the log read so far."""
    return [line for line in process.lines if "[ERROR]" in line]


def hup(process):
    """Ask the master to reload."""
    os.kill(process.pid, signal.SIGHUP)


# -- the configuration read again -----------------------------------------------------

@pytest.mark.timeout(30)
def test_changed_workers_in_the_config_file_serve_after_hup(spawn, tmp_path):
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py", settings(port))
    process, _ = start_prefork(spawn, "command_apps:Echo", config=conf)

    write_config(conf, settings(port, workers=3))
    hup(process)
    line = wait_log(process, "Configuration read again: ")
    assert line.rstrip().endswith("Configuration read again: workers 2 -> 3"), line
    workers = wait_reloaded(process, 2, 3)

    # Three workers, each of generation 2, each answering a connection it holds.
    answers = held_by_distinct_workers(("127.0.0.1", port), list(workers))
    assert {answer["pid"] for answer in answers} == set(workers)
    assert sorted(answer["worker"] for answer in answers) == sorted(workers.values())
    terminate(process)


# -- new code --------------------------------------------------------------------

def edited_later(path):
    """Date the edit 2 s after the import (as a user's edit is): the
    bytecode cache, valid for the source's mtime in whole seconds, is stale."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def reload_edited(spawn, tmp_path, client, *args, env=None):
    """Serve a copy of command_apps.py from tmp_path (2 workers, args: the
    application and options), see version 1 answer through client; then set
    VERSION 2 in the copy, date the edit later and HUP.  Returns (process,
    address, {pid: number} of generation 2) once generation 2 alone serves."""
    module = copy_app(tmp_path)
    address = ("127.0.0.1", free_port())
    conf = write_config(tmp_path / "prefork_conf.py", settings(address[1]))
    process, _ = start_prefork(spawn, *args, config=conf, cwd=tmp_path, env=env)
    assert client(address)["version"] == "1"

    set_version(module, "1", "2")
    edited_later(module)
    hup(process)
    return process, address, wait_reloaded(process, 2, 2)


APPS_AND_CLIENTS = [("command_apps:Echo", ask), ("command_apps:app", get)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("app, client", APPS_AND_CLIENTS, ids=["handler", "wsgi"])
def test_hup_runs_the_new_code_of_the_application(spawn, tmp_path, app, client):
    # With bytecode caching on, as for a user (the test environment may turn it off).
    _, address, workers = reload_edited(spawn, tmp_path, client, app,
                                        env={"PYTHONDONTWRITEBYTECODE": ""})
    for _ in range(4):
        answer = client(address)
        assert answer["version"] == "2", answer
        # Imported afresh by the worker itself, not inherited from the master.
        assert answer["pid"] in workers
        assert answer["imported_by"][0] == answer["pid"]


@pytest.mark.timeout(30)
def test_hup_runs_new_code_edited_within_the_second_of_the_import(spawn, tmp_path):
    # An edit of the same size in the same second as the import that cached
    # its bytecode (a deploy script, a quick test): the reload must see it.
    module = copy_app(tmp_path)
    stat = os.stat(module)
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py", settings(port, workers=1))
    process, _ = start_prefork(spawn, "command_apps:Echo", workers=1, config=conf,
                               cwd=tmp_path, env={"PYTHONDONTWRITEBYTECODE": ""})
    wait_for(lambda: os.path.isdir(tmp_path / "__pycache__"), message="bytecode cached")

    set_version(module, "1", "2")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hup(process)
    wait_reloaded(process, 2, 1)
    assert ask(("127.0.0.1", port))["version"] == "2"


@pytest.mark.timeout(30)
def test_hup_with_preload_keeps_the_masters_code(spawn, tmp_path):
    # preload_app: "load the application in the master before forking" -- the
    # workers use the master's copy, which a HUP does not import again.
    process, address, workers = reload_edited(spawn, tmp_path, ask, "--preload",
                                              "command_apps:Echo")
    for _ in range(4):
        answer = ask(address)
        assert answer["pid"] in workers
        assert answer["version"] == "1", answer
        assert answer["imported_by"][0] == process.pid


# -- a bad configuration is refused -------------------------------------------------

# (the line added to the config file, why it is refused: {conf} its path, {line} the line)
BAD_CONFIGS = {
    "not-an-integer": ('workers = "many"\n',
                       "config file {conf}: workers must be an integer >= 1, not 'many'"),
    "syntax-error": ("workers = (\n",
                     "config file {conf}: SyntaxError: '(' was never closed "
                     "(at {conf}, line {line}: workers = ()"),
    "import-error": ("import nosuch\n",
                     "config file {conf}: ModuleNotFoundError: No module named 'nosuch' "
                     "(at {conf}, line {line}: import nosuch)"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_file_is_refused_and_the_old_one_serves(spawn, tmp_path, bad):
    text, why = BAD_CONFIGS[bad]
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py", settings(port))
    why = why.format(conf=conf, line=settings(port).count("\n") + 1)
    assert_refused_then_applied(spawn, conf, [port], settings(port) + text, why)


@pytest.mark.timeout(30)
def test_bind_on_a_taken_port_is_refused_and_the_old_binds_serve(spawn, tmp_path):
    port = free_port()
    with taken_port() as busy:  # another server's socket listens there
        conf = write_config(tmp_path / "prefork_conf.py", settings(port))
        assert_refused_then_applied(spawn, conf, [port], settings(port, busy),
                                    f"cannot listen on 127.0.0.1:{busy}: Address already in use")


def assert_refused_then_applied(spawn, conf, ports, bad, why):
    """Start command_apps:Echo with the config file conf (settings(*ports));
    HUP with the bad config: one ERROR line saying why, nothing changed,
    still serving; then HUP with settings(*ports, workers=3): applied."""
    process, _ = start_prefork(spawn, "command_apps:Echo", config=conf)
    address = ("127.0.0.1", ports[0])
    workers = live_children(process.pid)
    write_config(conf, bad)
    hup(process)
    refused = wait_log(process, "Reload refused")
    assert refused.rstrip().endswith(
        f"[ERROR] Reload refused, the running configuration stays: {why}"), refused
    assert error_lines(process) == [refused]
    assert ask(address)["pid"] in workers
    assert live_children(process.pid) == workers

    write_config(conf, settings(*ports, workers=3))
    hup(process)
    applied = wait_log(process, "Configuration read again: ")
    assert applied.rstrip().endswith("Configuration read again: workers 2 -> 3"), applied
    # Generation 2: the refused HUP started none.
    new = wait_reloaded(process, 2, 3)
    assert not any("Reloading" in line for line in process.lines[:process.lines.index(applied)])
    assert error_lines(process) == [refused]
    assert ask(address)["pid"] in new
    assert not set(new) & workers


# -- binds changed ----------------------------------------------------------------------

@pytest.mark.timeout(40)
def test_binds_added_and_removed_under_load_lose_nothing(spawn, tmp_path):
    a, b = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    conf = write_config(tmp_path / "prefork_conf.py", settings(a[1]))
    process, _ = start_prefork(spawn, "commands:StreamCommands", config=conf)

    with Load(a, limit=5000, pace=0.002) as load_a:
        load_a.wait_for_replies(10, "load on A to start")
        write_config(conf, settings(a[1], b[1]))
        hup(process)
        wait_log(process, f"Listening at: 127.0.0.1:{b[1]}")
        wait_reloaded(process, 2, 2)
        assert echo(b).generation == 2
        load_a.wait_for_replies(10, "load on A after the reload")
    assert load_a.failures == []
    assert load_a.sent < load_a.limit, "the load must run through the reload"
    assert load_a.generations == {1, 2}

    with Load(b, limit=5000, pace=0.002) as load_b:
        load_b.wait_for_replies(10, "load on B to start")
        write_config(conf, settings(b[1]))
        hup(process)
        wait_log(process, "Reloaded: generation 3 serving")
        wait_log(process, f"Closing listener 127.0.0.1:{a[1]}")
        wait_generation(process, 3, 2)
        load_b.wait_for_replies(10, "load on B after the reload")
    assert load_b.failures == []
    assert load_b.generations == {2, 3}

    # A is closed: refused at once, never left to hang.
    with pytest.raises(ConnectionRefusedError):
        connect(a)
    assert echo(b).generation == 3
    terminate(process)


@pytest.mark.timeout(30)
def test_unix_bind_added_then_removed_makes_then_removes_its_file(spawn, tmp_path, unix_dir):
    port = free_port()
    path = os.path.join(unix_dir, "reload.sock")
    tcp_only = settings(port, workers=1)
    conf = write_config(tmp_path / "prefork_conf.py", tcp_only)
    process, _ = start_prefork(spawn, "commands:StreamCommands", workers=1, config=conf)
    assert not os.path.exists(path)

    write_config(conf, f'bind = ["127.0.0.1:{port}", "unix:{path}"]\nworkers = 1\n{QUICK}')
    hup(process)
    wait_reloaded(process, 2, 1)
    assert echo(path).generation == 2

    write_config(conf, tcp_only)
    hup(process)
    wait_log(process, "Reloaded: generation 3 serving")
    wait_log(process, f"Closing listener unix:{path}")
    # (removed just after that line is logged)
    wait_for(lambda: not os.path.exists(path), message="the socket file removed")
    wait_generation(process, 3, 1)
    assert echo(("127.0.0.1", port)).generation == 3


# -- what a reload cannot change --------------------------------------------------------

@pytest.mark.timeout(30)
def test_restart_only_setting_is_warned_about_and_the_rest_applied(spawn, tmp_path):
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py",
                        settings(port, extra='worker_class = "sync"\n'))
    process, _ = start_prefork(spawn, "command_apps:Echo", config=conf)

    write_config(conf, settings(port, workers=3, extra='worker_class = "threading"\n'))
    hup(process)
    warning = wait_log(process, "worker_class changed")
    assert warning.rstrip().endswith(
        "[WARNING] worker_class changed ('sync' -> 'threading'): it applies at the next "
        "start, not on a reload"), warning
    applied = wait_log(process, "Configuration read again: ")
    assert applied.rstrip().endswith("Configuration read again: workers 2 -> 3"), applied
    workers = wait_reloaded(process, 2, 3)
    assert ask(("127.0.0.1", port))["pid"] in workers
    assert error_lines(process) == []


# -- HUP after HUP -----------------------------------------------------------------------

@pytest.mark.timeout(40)
def test_second_hup_while_the_first_generation_boots_ends_with_the_newest(spawn, tmp_path):
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py", settings(port))
    # Every import of slow_reload in a worker takes 0.5 s: generation 2 is
    # still booting when the second HUP comes.
    process, _ = start_prefork(spawn, "slow_reload:SlowReloadCommands", config=conf,
                               env={"PREFORK_TEST_RELOAD_DELAY": "0.5"})
    address = ("127.0.0.1", port)

    with Load(address, limit=5000, pace=0.002) as load:
        load.wait_for_replies(10, "load to start")
        hup(process)
        wait_log(process, "Reloading: starting generation 2")
        hup(process)
        wait_log(process, "Reloading: starting generation 3")
        workers = wait_reloaded(process, 3, 2)
        load.wait_for_replies(10, "load after the reloads")
    assert load.failures == []
    assert load.sent < load.limit, "the load must run through the reloads"

    # (the case meant: no worker of generation 2 had booted at the second HUP)
    second = next(i for i, line in enumerate(process.lines) if "starting generation 3" in line)
    assert booted_workers(process.lines[:second], 2) == {}
    assert not any("Reloaded: generation 2" in line for line in process.lines)
    for _ in range(4):
        reply = echo(address)
        assert reply.generation == 3 and reply.pid in workers
    terminate(process)


# -- hooks ----------------------------------------------------------------------------

HOOKS = '''
import os

def _note(*words):
    with open(os.environ["HOOK_FILE"], "a") as file:
        file.write(" ".join(str(word) for word in words) + "\\n")

def when_ready(server):
    _note("when_ready", "TEXT", os.getpid(), server.workers)

def post_fork(server, worker):
    _note("post_fork", "TEXT", os.getpid(), worker.number, worker.generation, worker.pid,
          server.workers)

def on_reload(server):
    _note("on_reload", "TEXT", os.getpid(), server.workers)
'''


def hook_calls(path):
    """[(name, text, pid, *rest)] noted by the HOOKS hooks."""
    return [tuple(line.split()) for line in file_lines(path)]


@pytest.mark.timeout(30)
def test_config_file_hooks_get_their_arguments_and_reload_with_the_file(spawn, tmp_path):
    notes = str(tmp_path / "hooks.txt")
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py",
                        settings(port, extra=HOOKS.replace("TEXT", "v1")))
    process, _ = start_prefork(spawn, "command_apps:Echo", config=conf, env={"HOOK_FILE": notes})
    master = str(process.pid)
    first = booted_workers(process.lines, 1)

    wait_for(lambda: any(call[0] == "when_ready" for call in hook_calls(notes)),
             message="when_ready")
    calls = hook_calls(notes)
    assert ("when_ready", "v1", master, "2") in calls
    # post_fork runs in the worker itself: its pid is the worker's.
    assert sorted(call for call in calls if call[0] == "post_fork") == sorted(
        ("post_fork", "v1", str(pid), str(number), "1", str(pid), "2")
        for pid, number in first.items())

    write_config(conf, settings(port, extra=HOOKS.replace("TEXT", "v2")))
    hup(process)
    second = wait_reloaded(process, 2, 2)
    calls = hook_calls(notes)
    assert [call for call in calls if call[0] == "on_reload"] == [("on_reload", "v2", master, "2")]
    assert sorted(call for call in calls if call[0] == "post_fork" and call[4] == "2") == sorted(
        ("post_fork", "v2", str(pid), str(number), "2", str(pid), "2")
        for pid, number in second.items())
    # when_ready is the first generation's only.
    assert [call for call in calls if call[0] == "when_ready"] == [
        ("when_ready", "v1", master, "2")]


# -- the pidfile -------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_pidfile_moves_when_the_config_file_changes_it(spawn, tmp_path):
    old, new = tmp_path / "old.pid", tmp_path / "new.pid"
    port = free_port()
    conf = write_config(tmp_path / "prefork_conf.py",
                        settings(port, workers=1, extra=f"pidfile = {str(old)!r}\n"))
    process, _ = start_prefork(spawn, "command_apps:Echo", workers=1, config=conf)
    wait_for(lambda: old.exists() and old.read_text() == f"{process.pid}\n",
             message="the pidfile written")

    write_config(conf, settings(port, workers=1, extra=f"pidfile = {str(new)!r}\n"))
    hup(process)
    applied = wait_log(process, "Configuration read again: ")
    assert f"pidfile {str(old)!r} -> {str(new)!r}" in applied
    wait_reloaded(process, 2, 1)
    assert new.read_text() == f"{process.pid}\n"
    assert not old.exists()

    terminate(process)
    assert not new.exists()
