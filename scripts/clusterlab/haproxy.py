"""HAProxy in front of the lab's hosts: Debian's package, installed when
missing; configured, started on a socket the lab bound, read through its
stats socket, stopped and reaped.

Contract:
- ensure_installed() returns haproxy's path, installing Debian's `haproxy`
  with apt-get when it is missing (as root); Unavailable, one line, if it
  cannot.
- HAProxy(hosts, directory).start() binds 127.0.0.1:0 itself and hands the
  socket to HAProxy (`bind fd@N`): no port to race for; .address is then
  where clients connect.  It returns once the stats socket answers.
- states() is {server name: status} as `show stat` says it ("UP", "DOWN",
  "UP 1/2" going down, "DOWN 1/2" coming up, "MAINT"...).
- stop() stops HAProxy (TERM, then KILL) and reaps it.  DIRECTORY keeps
  haproxy.cfg, haproxy.log (its stdout and stderr: one line per request),
  haproxy.pid (for the clean-up of a crashed run), haproxy.sock.
"""

import os
import shutil
import signal
import socket
import subprocess

from . import hosts, procs
from .errors import LabError, Unavailable

CHECK_INTER_MS = 100  # a health check every 100 ms ...
CHECK_FALL = 2        # ... two failed ones take a host out: ~0.2-0.3 s
CHECK_RISE = 2        # ... two good ones put it back


def ensure_installed():
    """haproxy's path; installs Debian's package if needed, else Unavailable."""
    found = shutil.which("haproxy")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("HAProxy is not installed, and cannot be here (apt-get as root)")
    install = ["apt-get", "install", "-y", "-q", "haproxy"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "stdin": subprocess.DEVNULL,
             "env": dict(os.environ, DEBIAN_FRONTEND="noninteractive")}
    if subprocess.run(install, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet)  # the package lists may be old
        subprocess.run(install, **quiet)
    found = shutil.which("haproxy")
    if not found:
        raise Unavailable("HAProxy is not installed and `apt-get install haproxy` failed")
    return found


def config(servers, fd, stats_socket, redispatch=True, reuse="never"):
    """haproxy.cfg's text: a frontend on inherited descriptor fd, a backend
    with `servers` ((name, address) pairs) health-checked on HEALTH_PORT."""
    lines = [
        "global",
        "    log stdout format raw local0 info",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 512",
        "    hard-stop-after 5s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    timeout check 1s",
        # A connection refused (a host whose listener has just closed, or one
        # SIGKILLed before the checks noticed) is tried again, and on another
        # host (redispatch on every retry).  Only connection failures are
        # retried -- HAProxy's default retry-on -- never a request a host
        # took and then lost: that is a failure to count, not to hide.
        "    retries 3",
        "    option redispatch 1" if redispatch else "    no option redispatch",
        # No pooled, idle backend connection is ever handed a request: with
        # reuse, HAProxy may send a request on a connection the host is closing
        # at that instant (a stopping host closes its idle keep-alive
        # connections), and the request is lost.  Here each request has a
        # connection of its own, opened when HAProxy has chosen the host.
        f"    http-reuse {reuse}",
        "",
        "frontend lab",
        f"    bind fd@{fd}",
        "    default_backend hosts",
        "",
        "backend hosts",
        "    balance roundrobin",
        # The master's health listener: 200 ready, 503 booting / draining.
        "    option httpchk GET /health",
        "    http-check expect status 200",
        f"    default-server check port {hosts.HEALTH_PORT} inter {CHECK_INTER_MS}ms "
        f"fall {CHECK_FALL} rise {CHECK_RISE}",
    ]
    lines += [f"    server {name} {address}" for name, address in servers]
    return "\n".join(lines) + "\n"


class HAProxy:
    """HAProxy balancing over the lab's hosts (see the module's docstring)."""

    def __init__(self, servers, directory, redispatch=True, reuse="never"):
        self.servers = servers   # (name, "ADDRESS:PORT") pairs
        self.directory = directory
        self.redispatch = redispatch
        self.reuse = reuse
        self.config = os.path.join(directory, "haproxy.cfg")
        self.log = os.path.join(directory, "haproxy.log")
        self.pidfile = os.path.join(directory, "haproxy.pid")
        self.stats_socket = os.path.join(directory, "haproxy.sock")
        self.address = None
        self.popen = None

    def start(self, executable):
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(512)
            self.address = listener.getsockname()
            with open(self.config, "w") as file:
                file.write(config(self.servers, listener.fileno(), self.stats_socket,
                                  self.redispatch, self.reuse))
            with open(self.log, "ab") as log:
                # -db: stay in the foreground, one process: the pid is HAProxy's.
                self.popen = subprocess.Popen(
                    [executable, "-db", "-f", self.config], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, pass_fds=(listener.fileno(),),
                    start_new_session=True)
        finally:
            listener.close()  # HAProxy holds its own copy of the socket
        with open(self.pidfile, "w") as file:
            file.write(f"{self.popen.pid}\n")
        procs.wait(self._answers, 10, "HAProxy's stats socket")
        return self

    def _answers(self):
        if self.popen.poll() is not None:
            raise LabError(f"HAProxy exited with code {self.popen.returncode}:\n{self.tail()}")
        try:
            return bool(self.command("show info"))
        except OSError:
            return False

    def command(self, line):
        """Send one command to the stats socket; its whole answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.stats_socket)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self):
        """{server name: status} of the backend's servers, from `show stat`."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "hosts" and row.get("svname") not in (None, "BACKEND"):
                found[row["svname"]] = row["status"]
        return found

    def stop(self, timeout=10):
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self.popen = None

    def tail(self, lines=25):
        try:
            with open(self.log, errors="replace") as file:
                return "\n".join(file.read().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def remove_stale(directory):
    """Stop the HAProxy that a crashed lab left running from `directory` (its
    pidfile names it; its command line must name the directory's config)."""
    try:
        with open(os.path.join(directory, "haproxy.pid")) as file:
            pid = int(file.read().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    if os.path.join(directory, "haproxy.cfg") in procs.cmdline(pid):
        procs.kill_and_reap([pid])
