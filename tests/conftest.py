"""Shared helpers for the test-suite: real sockets, real processes, no sleeps."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def unix_dir():
    """A short temporary directory for Unix socket paths (sun_path is ~108 bytes)."""
    path = tempfile.mkdtemp(prefix="pf-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def serving(server, poll_interval=0.5):
    """Run server.serve_forever() in a thread; shut down and close on exit."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        assert not thread.is_alive(), "serve_forever() did not stop"


def wait_for(predicate, timeout=10.0, interval=0.01, message="condition"):
    """Poll predicate() until it is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Process:
    """A child process started by a test: its output is read line by line,
    and it is always stopped by its pid and reaped."""

    def __init__(self, args, env=None, cwd=ROOT):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.pid = self.popen.pid
        self.lines = []

    def readline_until(self, predicate, timeout=15.0):
        """Read output lines until one satisfies predicate; return that line."""
        result = {}

        def reader():
            for line in self.popen.stdout:
                self.lines.append(line)
                if predicate(line):
                    result["line"] = line
                    return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if "line" not in result:
            raise AssertionError("expected output not seen; got:\n" + "".join(self.lines))
        return result["line"]

    def output(self):
        """Everything the process printed (call after it has exited)."""
        rest = self.popen.stdout.read()
        self.lines.append(rest)
        return "".join(self.lines)

    def wait(self, timeout=15.0):
        return self.popen.wait(timeout)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal the process, wait for it, SIGKILL its group if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout)
        return self.popen.returncode


@pytest.fixture
def spawn():
    """Start processes with spawn([...]); every one is stopped and reaped after the test."""
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


PYTHON = sys.executable


APPS = os.path.join(ROOT, "tests", "apps")


def start_app(spawn, *args, env=None):
    """Start tests/apps/serve.py with these arguments; return (process, address)
    once it prints READY.  address is ("127.0.0.1", port) or a Unix path."""
    process = spawn([PYTHON, os.path.join(APPS, "serve.py"), *args], env=env)
    line = process.readline_until(lambda l: l.startswith("READY "))
    text = line.split(None, 1)[1].strip()
    if text.startswith("unix:"):
        return process, text[len("unix:"):]
    host, _, port = text.rpartition(":")
    return process, (host, int(port))
