"""The whole lab, set up together and torn down whatever happens.

Contract: `with Lab(...) as lab:` checks that the lab can run here
(Unavailable, one line, if not: not root, no network namespaces, no HAProxy
and no way to install it), removes what a crashed lab left (namespaces,
veths, processes, HAProxy, temporary directories of a dead owner), then
sets up, in order: a temporary directory pfk<PID>-*, the network (netns),
the hosts (each master ready, serving version v1), HAProxy with every host
in rotation, the rotation monitor, and the load (once every host answered).
Leaving the block -- normally, on an exception, on Ctrl-C -- stops the load,
the hosts (every process of their namespaces, reaped) and HAProxy (reaped),
deletes the namespaces and veths and the directory; when an exception is on
its way out (but Ctrl-C), the tails of the hosts' and HAProxy's logs are
printed first.
This process is a child subreaper while the lab is up (see procs).
"""

import glob
import os
import re
import shutil
import sys
import tempfile
import time

from . import haproxy, netns, procs
from .errors import LabError
from .hosts import PORT, Host
from .load import Load
from .rotation import Rotation


def remove_stale():
    """Remove what crashed labs left; return a list of what was removed."""
    removed = netns.remove_stale()  # kills the processes of their namespaces too
    pattern = os.path.join(tempfile.gettempdir(), f"{netns.PREFIX}*-*")
    for directory in glob.glob(pattern):
        match = re.fullmatch(rf"{netns.PREFIX}(\d+)-\w+", os.path.basename(directory))
        if match and not procs.alive(int(match.group(1))):
            haproxy.remove_stale(directory)
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


class Lab:
    """Hosts behind HAProxy under load (see the module's docstring).

    hosts: how many (2..3); threads, rate, duration: the load's clients and
    bounds; sleep: seconds each request takes in the application;
    drain_delay, redispatch, reuse: the hosts' --drain-delay and HAProxy's
    settings, changeable to show what goes wrong without them.
    """

    def __init__(self, hosts=3, threads=8, rate=200.0, duration=120.0, sleep=0.02,
                 drain_delay=1.0, redispatch=True, reuse="never", say=print):
        if not 1 <= hosts <= 3:
            raise ValueError(f"hosts must be 1..3, not {hosts}")
        self.count = hosts
        self.threads, self.rate, self.duration, self.sleep = threads, rate, duration, sleep
        self.drain_delay = drain_delay
        self.redispatch, self.reuse = redispatch, reuse
        self.say = say
        self.owner = os.getpid()
        self.directory = None
        self.network = None
        self.hosts = []
        self.haproxy = None
        self.rotation = None
        self.load = None

    def __enter__(self):
        netns.probe()
        executable = haproxy.ensure_installed()
        if removed := remove_stale():
            self.say(f"removed a crashed lab's leftovers: {', '.join(removed)}")
        procs.set_subreaper(True)
        try:
            self._set_up(executable)
        except BaseException as error:
            if not isinstance(error, KeyboardInterrupt):
                self._report_failure()
            self.close()
            raise
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            self._report_failure()
        self.close()

    def _set_up(self, executable):
        self.directory = tempfile.mkdtemp(prefix=f"{netns.PREFIX}{self.owner}-")
        self.network = netns.Network(self.count, owner=self.owner).create()
        self.say(f"network: {self.network.subnet}, "
                 + ", ".join(f"{net.name} {net.address} in namespace {net.namespace}"
                             for net in self.network.hosts))
        self.hosts = [Host(net, os.path.join(self.directory, net.name), self.drain_delay)
                      for net in self.network.hosts]
        pids = [host.spawn() for host in self.hosts]  # they boot side by side
        for host, pid in zip(self.hosts, pids):
            host.wait_ready(pid, since=0)
        self.say("hosts: " + ", ".join(f"{host.name} master {host.master}"
                                         for host in self.hosts)
                 + f" (prefork -w 2, --drain-delay {self.drain_delay:g}, v1)")
        self.haproxy = haproxy.HAProxy([(h.name, f"{h.net.address}:{PORT}") for h in self.hosts],
                                       self.directory, self.redispatch, self.reuse)
        self.haproxy.start(executable)
        self.rotation = Rotation(self.haproxy).start()
        for host in self.hosts:
            self.rotation.wait(host.name, True)
        self.say(f"HAProxy (pid {self.haproxy.popen.pid}) on {self.address[0]}:"
                 f"{self.address[1]}: every host in rotation")
        self.load = Load(self.address, self.threads, self.rate, self.duration,
                         self.sleep).start()
        for host in self.hosts:
            self.load.wait_answer(host.name, "v1", self.load.started)
        self.say(f"load: {self.threads} clients, at most {self.rate:g} requests/s "
                 f"for at most {self.duration:g} s; every host answers")

    @property
    def address(self):
        return self.haproxy.address

    def host(self, name):
        return next(host for host in self.hosts if host.name == name)

    def close(self):
        """Stop and remove everything; LabError at the end if a step failed
        (every step is tried)."""
        problems = []
        for step in (self._stop_load, self._stop_hosts, self._stop_haproxy,
                     self._remove_network, self._remove_directory):
            try:
                step()
            except Exception as error:  # noqa: BLE001 -- the next steps still run
                problems.append(f"{step.__name__}: {error}")
        procs.set_subreaper(False)
        if problems:
            raise LabError("tearing the lab down: " + "; ".join(problems))

    def _stop_load(self):
        if self.load:
            self.load.stop()
        if self.rotation:
            self.rotation.stop()

    def _stop_hosts(self):
        for host in self.hosts:
            host.stop()

    def _stop_haproxy(self):
        if self.haproxy:
            self.haproxy.stop()

    def _remove_network(self):
        if self.network:
            self.network.remove()

    def _remove_directory(self):
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def tails(self, lines=25):
        """The last lines of every host's log and of HAProxy's."""
        parts = [f"--- {host.name} ({host.log}) ---\n{host.tail(lines)}" for host in self.hosts]
        if self.haproxy:
            parts.append(f"--- HAProxy ({self.haproxy.log}) ---\n{self.haproxy.tail(lines)}")
        return "\n".join(parts)

    def _report_failure(self):
        if self.directory:
            print(f"the lab failed at {time.strftime('%H:%M:%S')}; its logs' last lines:\n"
                  + self.tails(), file=sys.stderr, flush=True)
