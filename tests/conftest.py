"""The test-suite's pytest fixtures, built on tests/support.py (which holds
every shared helper)."""

import contextlib
import os
import shutil
import signal
import tempfile

import psutil
import pytest

from support import Lab, Process, set_subreaper


@pytest.fixture
def unix_dir():
    """A short temporary directory for Unix socket paths (sun_path is ~108 bytes)."""
    path = tempfile.mkdtemp(prefix="pf-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn():
    """spawn(args, env=None, cwd=ROOT) starts a support.Process; after the test
    every one is stopped with SIGKILL -- its whole tree, descendants in other
    process groups included -- and reaped."""
    started = []

    def start(args, **kwargs):
        process = Process(args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)
        if process.popen.stdout:
            process.popen.stdout.close()


@pytest.fixture
def lab(unix_dir):
    """A support.Lab: in-process servers and clients, all closed after the test."""
    with Lab(unix_dir) as lab:
        yield lab


@pytest.fixture
def started_file(unix_dir):
    """(path, env): $PREFORK_TEST_STARTED_FILE for tests/apps/commands.py, which
    appends one line per slow request there (see support.started_requests)."""
    path = os.path.join(unix_dir, "started")
    return path, {"PREFORK_TEST_STARTED_FILE": path}


@pytest.fixture
def subreaper():
    """This test process adopts the orphans of its descendants (a new master
    whose old master has exited, after USR2), so that their exit status can
    be read (support.exit_code()).  Set it up before `spawn` -- name it first
    in the test's arguments, or in a module's pytestmark usefixtures -- so that
    it is torn down after spawn has killed every process; then the adopted
    ones left are reaped."""
    set_subreaper(True)
    yield
    set_subreaper(False)
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
