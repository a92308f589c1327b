"""One lab host: the real `prefork` command serving the lab's application in
the host's network namespace.

Contract:
- Host(net, directory) owns DIRECTORY: cluster_app.py (a copy of app.py whose
  VERSION deploy() rewrites), prefork.pid (+ .oldbin during an upgrade),
  host.log (what every master of the host prints: its stderr, the error log).
- start() runs `ip netns exec NS python -m prefork ...` -- ip execs, so the
  process started is the master -- and returns once the master has written
  its pidfile (it does so once it is ready) and logged its health listener.
  host.master is the current master's pid: after a USR2 upgrade, the new
  master (an orphan once the old master exits, adopted and reaped by the
  lab: procs.set_subreaper).
- Every wait polls a state (a file, a log line, a process) with a deadline.
- kill_all() SIGKILLs every process of the namespace and reaps them; stop()
  asks the master for a graceful stop, then kill_all() what is left.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys

from . import procs
from .errors import LabError
from .netns import pids_in
from .procs import wait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")
PORT, HEALTH_PORT = 8000, 8001
WORKERS = 2
START_TIMEOUT = 20   # seconds for a master to write its pidfile
STOP_TIMEOUT = 20    # seconds for a graceful stop (drain delay included)


class Host:
    """A prefork host in its namespace (see the module's docstring)."""

    def __init__(self, net, directory, drain_delay=1.0, python=sys.executable):
        self.net = net
        self.name = net.name
        self.directory = directory
        self.drain_delay = drain_delay
        self.python = python
        self.app = os.path.join(directory, "cluster_app.py")
        self.pidfile = os.path.join(directory, "prefork.pid")
        self.log = os.path.join(directory, "host.log")
        self.version = "v1"
        self.master = None    # the current master's pid
        self._popen = {}      # pid -> Popen of the masters started here (reaped by Popen)
        os.makedirs(directory, exist_ok=True)
        shutil.copy(APP, self.app)

    # -- the code on disk ----------------------------------------------------------

    def deploy(self, version):
        """Write `version` into the host's copy of the application (the next
        master or generation of workers loads it)."""
        with open(self.app) as file:
            text = file.read()
        text, count = re.subn(r'^VERSION = ".*"$', f'VERSION = "{version}"', text, flags=re.M)
        assert count == 1, self.app
        # Whole or not at all: a worker importing it meanwhile never reads half a file.
        with open(self.app + ".new", "w") as file:
            file.write(text)
        os.replace(self.app + ".new", self.app)
        self.version = version

    # -- masters -----------------------------------------------------------------------

    def command(self):
        """The master's command line, run in the host's namespace."""
        args = ["ip", "netns", "exec", self.net.namespace, self.python, "-m", "prefork",
                "-w", str(WORKERS), "--bind", f"{self.net.address}:{PORT}",
                "--health-bind", f"{self.net.address}:{HEALTH_PORT}",
                "--graceful-timeout", "10", "--pid", self.pidfile]
        if self.drain_delay:
            args += ["--drain-delay", f"{self.drain_delay:g}"]
        return args + ["cluster_app:application"]

    def start(self):
        """Start a master (the host must have none); return its pid once it is ready."""
        since = self.log_size()
        pid = self.spawn()
        self.wait_ready(pid, since)
        return pid

    def wait_ready(self, pid, since):
        """Wait until master pid (started when the log was `since` long) has
        written its pidfile and logged its health listener."""
        self.wait_pidfile(pid)
        self.wait_log(f"Health listener at: {self.net.address}:{HEALTH_PORT} ({pid})", since)

    def spawn(self):
        """Start a master (the host must have none); return its pid at once."""
        env = dict(os.environ, PREFORK_CMD_ARGS="", CLUSTERLAB_HOST=self.name,
                   PYTHONUNBUFFERED="1",
                   # No .pyc: a rewrite within the same second could load a stale one.
                   PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log, "ab") as log:
            popen = subprocess.Popen(self.command(), cwd=self.directory, env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)  # Ctrl-C is the lab's to handle
        self._popen[popen.pid] = popen
        self.master = popen.pid
        return popen.pid

    def pidfile_pid(self, suffix=""):
        """The pid in the pidfile (PIDFILE + suffix), or None."""
        try:
            with open(self.pidfile + suffix) as file:
                return int(file.read().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def health(self):
        """(status, body) of a GET /health on the master's health listener."""
        connection = http.client.HTTPConnection(self.net.address, HEALTH_PORT, timeout=5)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def wait_pidfile(self, pid, suffix="", timeout=START_TIMEOUT):
        """Wait until the pidfile (+ suffix) holds pid; LabError sooner if the
        master exits."""
        def written():
            if not procs.alive(pid):
                raise LabError(f"{self.name}: master {pid} exited before it was ready")
            return self.pidfile_pid(suffix) == pid
        wait(written, timeout, f"{self.name}: pidfile{suffix} of master {pid}")

    def signal(self, sig, pid=None):
        """Send sig to the current master (or pid)."""
        if not procs.send(pid or self.master, sig):
            raise LabError(f"{self.name}: master {pid or self.master} is gone")

    def wait_exit(self, pid, timeout=STOP_TIMEOUT):
        """Wait for master pid to exit and reap it; its exit code."""
        popen = self._popen.pop(pid, None)
        if popen is None:
            return procs.reap(pid, timeout)  # adopted: a USR2 master
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name}: master {pid} did not exit within {timeout:g}s") \
                from None

    def upgrade(self, timeout=START_TIMEOUT):
        """USR2 to the master; return the new master's pid once it is ready
        (the pidfile holds it, the old one's moved to PIDFILE.oldbin)."""
        old = self.master
        self.signal(signal.SIGUSR2)
        wait(lambda: self.pidfile_pid(".oldbin") == old, timeout,
             f"{self.name}: pidfile.oldbin of master {old}")
        new = wait(lambda: (pid := self.pidfile_pid()) not in (None, old) and pid, timeout,
                   f"{self.name}: the new master's pidfile")
        self.master = new
        return new

    def kill_all(self):
        """SIGKILL every process of the namespace, the master first (so that
        none is replaced), until none is left; reap them.  Returns the pids killed."""
        killed = []
        while pids := pids_in(self.net.namespace):
            pids.sort(key=lambda pid: pid != self.master)
            for pid in pids:
                procs.send(pid, signal.SIGKILL)
            for pid in pids:
                if pid in self._popen:
                    self._popen.pop(pid).wait(STOP_TIMEOUT)
                else:
                    procs.reap(pid, STOP_TIMEOUT)
            killed += pids
        self.master = None
        return killed

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the host for good: a graceful stop of the master (QUIT: no
        drain delay), then kill_all() whatever is left."""
        if self.master and procs.alive(self.master):
            procs.send(self.master, signal.SIGQUIT)
            try:
                self.wait_exit(self.master, timeout)
            except LabError:
                pass  # killed below
        self.kill_all()
        for popen in self._popen.values():  # masters of this host that exited earlier
            popen.wait(timeout)
        self._popen.clear()

    # -- the log ---------------------------------------------------------------------

    def log_size(self):
        """The log's length now: an offset for wait_log()."""
        try:
            return os.path.getsize(self.log)
        except FileNotFoundError:
            return 0

    def log_text(self, since=0):
        try:
            with open(self.log, "rb") as file:
                file.seek(since)
                return file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, fragment, since=0, timeout=START_TIMEOUT):
        """The first log line after offset `since` that contains fragment."""
        def found():
            return next((line for line in self.log_text(since).splitlines()
                         if fragment in line), None)
        return wait(found, timeout, f"{self.name}: {fragment!r} in {self.log}")

    def tail(self, lines=25):
        return "\n".join(self.log_text().splitlines()[-lines:])
