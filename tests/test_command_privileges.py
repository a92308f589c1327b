"""The prefork command's --user, --group and --umask, as root and for real.

A real system user (and an extra group it belongs to) is made for the module
and removed after it.  The master keeps its identity (root): it binds, and
re-binds on a reload.  Each worker drops to the user/group right after the
post_fork hook (prefork/worker.py Worker.boot) -- with the user's supplementary
groups -- and then imports the application afresh, as that user, unless
--preload had the master import it.  tests/apps/command_apps.py's Echo answers
with the facts of the process that answered: its uid and gid, and the pid and
uid of the process that imported the module.

1. --user: master root; workers' real/effective uid and gid the user's, the
   extra group among their groups; the worker imported the app itself.
2. --user --group: the gid is the group's.
3. --preload --user: the master imported the app, the worker runs as the user.
4. --umask: the Unix socket file's mode and the workers' umask; without it,
   the umask the command inherited.
5. HUP: the new generation runs as the user; the master is still root.
6. Mistakes: an unknown user or group; --user by a non-root user.
7. USR1 with a root-owned error log: workers cannot reopen it, say so, and
   keep serving.

Skipped as a whole unless run as root with useradd available.
"""

import os
import pwd
import grp
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile

import psutil
import pytest

from support import (
    PREFORK, ask, assert_one_line_error, booted_workers, copy_app, file_lines, logged_addresses,
    python_runnable_as, run_prefork, spawn_prefork, start_prefork, wait_for, wait_lines,
    wait_reloaded)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates a user and "
                       "runs workers as that user"),
    pytest.mark.skipif(shutil.which("useradd") is None,
                       reason="needs useradd/groupadd to create a test user"),
]

APP = "command_apps:Echo"


# -- helpers -----------------------------------------------------------------------

def status_field(pid, name):
    """A field of /proc/PID/status ("Groups", "Umask", ...), as text."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    raise AssertionError(f"no {name}: in /proc/{pid}/status")


def groups_of(pid):
    """The supplementary groups of process pid (psutil's gids() are not those)."""
    return {int(gid) for gid in status_field(pid, "Groups").split()}


def traversable_by(path, uid, gids):
    """Whether every directory from / down to path lets uid (with gids) through."""
    path = os.path.abspath(path)
    parts = [path]
    while parts[-1] != "/":
        parts.append(os.path.dirname(parts[-1]))
    for directory in parts:
        st = os.stat(directory)
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


# -- fixtures ------------------------------------------------------------------

class Account:
    """The test's user: name, uid, gid (primary group); extra group: name, gid."""

    def __init__(self, name, extra):
        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.extra, self.extra_gid = extra, grp.getgrnam(extra).gr_gid


def _run(*args):
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def account():
    """A real system user in an extra group, both removed after the module."""
    name = f"pf-test-{secrets.token_hex(4)}"
    extra = f"{name}-x"
    try:
        _run("groupadd", "--system", extra)
        _run("useradd", "--system", "--no-create-home", "--user-group",
             "--shell", "/usr/sbin/nologin", name)
        _run("usermod", "-aG", extra, name)
        yield Account(name, extra)
    finally:  # whatever was made (userdel may have removed the user's group already)
        for command in (("userdel", name), ("groupdel", name), ("groupdel", extra)):
            subprocess.run(command, capture_output=True, timeout=30)
    assert name not in {entry.pw_name for entry in pwd.getpwall()}, "test user left over"
    assert not {name, extra} & {entry.gr_name for entry in grp.getgrall()}, \
        "test group left over"


@pytest.fixture(scope="module")
def app_dir(account, tmp_path_factory):
    """A directory (0755) the test user can reach, holding a copy of command_apps.py:
    under pytest's temp directory if the user can reach it, else under /tmp."""
    base = tmp_path_factory.mktemp("privileges")
    made = None
    if not traversable_by(base, account.uid, {account.gid, account.extra_gid}):
        made = base = tempfile.mkdtemp(prefix="pf-priv-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        os.chmod(copy_app(base), 0o644)
        assert traversable_by(base, account.uid, {account.gid, account.extra_gid})
        yield str(base)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def log_dir(app_dir):
    """A fresh 0755 directory the test user can reach (for a root-owned log file)."""
    path = tempfile.mkdtemp(prefix="logs-", dir=app_dir)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(spawn, app_dir, *args, workers=2):
    """start_prefork() of command_apps:Echo in app_dir."""
    return start_prefork(spawn, *args, APP, workers=workers, cwd=app_dir)


def assert_root(pid):
    process = psutil.Process(pid)
    assert tuple(process.uids()) == (0, 0, 0)
    assert tuple(process.gids()) == (0, 0, 0)


def assert_runs_as(pid, uid, gid):
    process = psutil.Process(pid)
    assert tuple(process.uids()) == (uid, uid, uid), f"worker {pid}"
    assert tuple(process.gids()) == (gid, gid, gid), f"worker {pid}"


# -- tests ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_user_runs_workers_as_the_user_and_they_import_the_app(spawn, account, app_dir):
    process, (address,) = start(spawn, app_dir, "--user", account.name)
    assert_root(process.pid)
    workers = booted_workers(process.lines)
    assert len(workers) == 2
    for pid in workers:
        assert_runs_as(pid, account.uid, account.gid)
        # initgroups-like: the user's groups, its extra one included
        assert account.extra_gid in groups_of(pid)
        assert 0 not in groups_of(pid)  # root's group is dropped
    for _ in range(4):
        got = ask(address)
        assert got["pid"] in workers
        assert (got["uid"], got["gid"]) == (account.uid, account.gid)
        # imported in the worker itself, after it dropped to the user
        assert got["imported_by"] == (got["pid"], account.uid)


@pytest.mark.timeout(30)
def test_group_sets_the_workers_gid(spawn, account, app_dir):
    process, (address,) = start(spawn, app_dir, "--user", account.name,
                                "--group", account.extra)
    assert_root(process.pid)
    for pid in booted_workers(process.lines):
        assert_runs_as(pid, account.uid, account.extra_gid)
        assert 0 not in groups_of(pid)
    got = ask(address)
    assert (got["uid"], got["gid"]) == (account.uid, account.extra_gid)


@pytest.mark.timeout(30)
def test_preload_imports_in_the_master_and_the_worker_runs_as_the_user(
        spawn, account, app_dir):
    process, (address,) = start(spawn, app_dir, "--preload", "--user", account.name)
    workers = booted_workers(process.lines)
    for pid in workers:
        assert_runs_as(pid, account.uid, account.gid)
    got = ask(address)
    assert got["pid"] in workers
    assert got["uid"] == account.uid
    assert got["imported_by"] == (process.pid, 0)


@pytest.mark.timeout(30)
def test_umask_sets_the_socket_mode_and_the_workers_umask(spawn, app_dir, unix_dir):
    path = os.path.join(unix_dir, "s.sock")
    process, (address,) = start(spawn, app_dir, "-b", f"unix:{path}", "--umask", "077")
    assert address == path
    # the kernel makes a socket file 0777 & ~umask
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert status_field(process.pid, "Umask") == "0077"
    for pid in booted_workers(process.lines):
        assert status_field(pid, "Umask") == "0077"
    assert ask(path)["uid"] == 0


@pytest.mark.timeout(30)
def test_without_umask_the_inherited_umask_applies(spawn, app_dir, unix_dir):
    path = os.path.join(unix_dir, "s.sock")
    old = os.umask(0o022)  # what the command inherits when it is spawned
    try:
        process, _ = start(spawn, app_dir, "-b", f"unix:{path}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    for pid in booted_workers(process.lines):
        assert status_field(pid, "Umask") == "0022"


@pytest.mark.timeout(30)
def test_hup_new_generation_runs_as_the_user(spawn, account, app_dir):
    process, (address,) = start(spawn, app_dir, "--user", account.name)
    old = booted_workers(process.lines)
    os.kill(process.pid, signal.SIGHUP)
    # (returns once the old generation is gone: only the new one answers)
    new = wait_reloaded(process, 2, 2)
    assert not set(new) & set(old)
    assert_root(process.pid)
    for pid in new:
        assert_runs_as(pid, account.uid, account.gid)
        assert account.extra_gid in groups_of(pid)
    got = ask(address)  # answered as the user
    assert got["pid"] in new
    assert got["imported_by"] == (got["pid"], account.uid)


@pytest.mark.timeout(30)
def test_unknown_user_or_group_is_one_line_and_exit_1(account, app_dir):
    for option, name, kind in (("--user", "nosuchuser", "user"),
                               ("--group", "nosuchgroup", "group")):
        result = run_prefork("-b", "127.0.0.1:0", "--user", account.name, option, name, APP,
                             cwd=app_dir)
        assert_one_line_error(result, f"{kind} '{name}': no such {kind}")


def as_user(account):
    """A command prefix that runs what follows as the test user, with its groups."""
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups"]
    return ["runuser", "-u", account.name, "--"]


@pytest.mark.timeout(30)
def test_user_other_than_oneself_needs_root(account, app_dir):
    python = python_runnable_as(as_user(account))
    if python is None:
        pytest.skip("no Python >= 3.10 the test user can run")
    result = run_prefork("-b", "127.0.0.1:0", "--user", "root", APP, cwd=app_dir,
                         command=[*as_user(account), python, *PREFORK[1:]])
    assert_one_line_error(result, "user 'root': only root can run workers as another user")


@pytest.mark.timeout(30)
def test_usr1_workers_cannot_reopen_a_root_log_and_keep_serving(
        spawn, account, app_dir, log_dir):
    log_file = os.path.join(log_dir, "error.log")
    process = spawn_prefork(spawn, "-w", "2", "-b", "127.0.0.1:0", "--user", account.name,
                            "--error-logfile", log_file, APP, cwd=app_dir)
    wait_lines(log_file, "Booted worker", 2)
    workers = booted_workers(file_lines(log_file))
    [address] = logged_addresses(file_lines(log_file))
    # made by the master, as root, with the default umask: the user may not write it
    st = os.stat(log_file)
    assert st.st_uid == 0 and not st.st_mode & stat.S_IWOTH

    os.kill(process.pid, signal.SIGUSR1)
    warning = (f"[WARNING] Could not reopen {log_file}: [Errno 13] Permission denied: "
               f"'{log_file}'")

    def warned_by():
        return {pid for pid in workers
                if any(f"[{pid}] {warning}" in line for line in file_lines(log_file))}

    wait_for(lambda: warned_by() == set(workers), message="each worker's warning")
    # the master reopened it, and warned of nothing
    lines = file_lines(log_file)
    assert any(f"[{process.pid}] [INFO] reopened log files" in line for line in lines)
    assert not any(f"[{process.pid}] [WARNING]" in line for line in lines)
    # the workers keep serving, as the user, and are still the same processes
    for _ in range(4):
        got = ask(address, "after-usr1")
        assert got["pid"] in workers and got["uid"] == account.uid
    assert all(psutil.pid_exists(pid) for pid in workers)
