"""The roll: every host in turn through each operation, under load, with the
figures of each operation and the targets they must meet.

Operations (each host in turn, waiting on readiness at every step):
    restart  drain + TERM + start the new version: TERM the master (its drain
             delay keeps it serving while its health check says 503 and HAProxy
             takes it out), wait for it to exit, start a master of the new
             version, wait until HAProxy has it in rotation again
    reload   HUP with new code on disk: wait for "Reloaded" and the new version's answers
    upgrade  USR2 with new code on disk: wait for the new master (pidfile
             rewritten, PIDFILE.oldbin), TERM the old master, wait for it to exit
    kill     one host (the first) SIGKILLed outright -- every process of its
             namespace -- then restarted; HAProxy's checks take it out
Each ends once the host has answered ANSWERS requests with its new version
and runs one master and its workers only.  The health listener is checked
too: 200 ready before a restart's TERM, 503 draining during its drain delay,
200 ready once a USR2's new master is ready.
Targets (targets()): no failed request in restart, reload, upgrade; in kill at
most one per client thread (the requests in flight on the host when it was
killed); no host out of rotation during a reload or an upgrade.
"""

import collections
import signal
import time
from dataclasses import dataclass, field

from .errors import LabError
from .hosts import WORKERS
from .netns import pids_in
from .procs import wait

ANSWERS = 10  # requests a host must answer with its new version before the next step

OPERATIONS = {
    "restart": "a. drain + TERM + new version",
    "reload": "b. HUP reload (new code)",
    "upgrade": "c. USR2 binary upgrade",
    "kill": "d. SIGKILL + restart (one host)",
}


@dataclass
class Figures:
    """One operation's figures."""

    operation: str                 # a key of OPERATIONS
    seconds: float                 # how long it took, every host included
    sent: int                      # requests sent while it ran
    failed: int
    reasons: collections.Counter   # failure reason -> count
    out: dict = field(default_factory=dict)   # host -> seconds out of rotation

    @property
    def title(self):
        return OPERATIONS[self.operation]


class Roll:
    """Runs the operations on a set-up lab.Lab; say() tells each step."""

    def __init__(self, lab, say=print):
        self.lab = lab
        self.say = say
        self.version = 1
        self.figures = []

    def run(self, operations=tuple(OPERATIONS)):
        for operation in operations:
            self.operation(operation)
        return self.figures

    def operation(self, name):
        self.say(f"== {OPERATIONS[name]}")
        start = time.monotonic()
        if name == "kill":
            self.kill(self.lab.hosts[0])
        else:
            self.version += 1
            for host in self.lab.hosts:
                getattr(self, name)(host, f"v{self.version}")
        end = time.monotonic()
        self.lab.load.settle(end)
        figures = self.measure(name, start, end)
        self.figures.append(figures)
        self.say(f"   {figures.sent} requests sent, {figures.failed} failed"
                 + "".join(f"; {reason}: {count}" for reason, count in figures.reasons.items())
                 + "; out of rotation: "
                 + ", ".join(f"{host} {seconds:.2f}s" for host, seconds in figures.out.items()))
        return figures

    def measure(self, name, start, end):
        outcomes = self.lab.load.between(start, end)
        failures = collections.Counter(o.failure for o in outcomes if o.failure)
        out = {host.name: self.lab.rotation.out_seconds(host.name, start, end)
               for host in self.lab.hosts}
        return Figures(name, end - start, len(outcomes), sum(failures.values()), failures, out)

    # -- the operations, on one host -------------------------------------------------------

    def step(self, host, text, since):
        self.say(f"   {host.name} +{time.monotonic() - since:5.2f}s  {text}")

    def restart(self, host, version):
        t0 = time.monotonic()
        old, since = host.master, host.log_size()
        self.health(host, (200, "ready\n"), t0)
        host.deploy(version)
        host.signal(signal.SIGTERM)
        self.step(host, f"TERM to master {old}", t0)
        if host.drain_delay:
            self.step(host, host.wait_log("Draining for", since).split("] ", 3)[-1], t0)
            self.health(host, (503, "draining\n"), t0)
        self.lab.rotation.wait(host.name, False)
        self.step(host, "out of rotation (HAProxy: DOWN)", t0)
        code = host.wait_exit(old)
        self.step(host, f"master {old} exited with code {code}", t0)
        host.start()
        self.step(host, f"master {host.master} ({version}) ready", t0)
        self.back_in(host, version, t0)

    def reload(self, host, version):
        t0 = time.monotonic()
        since = host.log_size()
        host.deploy(version)
        host.signal(signal.SIGHUP)
        self.step(host, f"HUP to master {host.master}", t0)
        self.step(host, host.wait_log("Reloaded", since).split("] ", 3)[-1], t0)
        self.serving(host, version, t0)

    def upgrade(self, host, version):
        t0 = time.monotonic()
        old = host.master
        host.deploy(version)
        new = host.upgrade()
        self.step(host, f"USR2 to master {old}: new master {new} ready "
                        "(pidfile rewritten, the old one's is .oldbin)", t0)
        self.health(host, (200, "ready\n"), t0)
        host.signal(signal.SIGTERM, old)
        self.step(host, f"TERM to the old master {old}", t0)
        code = host.wait_exit(old)
        self.step(host, f"old master {old} exited with code {code}", t0)
        self.serving(host, version, t0)

    def kill(self, host):
        t0 = time.monotonic()
        killed = host.kill_all()
        self.step(host, f"SIGKILL to every process of {host.net.namespace}: "
                        f"{len(killed)} ({', '.join(map(str, killed))})", t0)
        self.lab.rotation.wait(host.name, False)
        self.step(host, "out of rotation (HAProxy: DOWN)", t0)
        host.start()
        self.step(host, f"master {host.master} ({host.version}) ready", t0)
        self.back_in(host, host.version, t0)

    def health(self, host, expected, t0):
        """Check what the host's health listener answers now (LabError if not expected)."""
        answer = host.health()
        if answer != expected:
            raise LabError(f"{host.name}: the health listener answered {answer}, "
                           f"not {expected}")
        self.step(host, f"health check: {answer[0]} {answer[1].strip()}", t0)

    def back_in(self, host, version, t0):
        """Wait until HAProxy has host in rotation and it answers with version."""
        self.lab.rotation.wait(host.name, True)
        self.step(host, "in rotation (HAProxy: UP)", t0)
        self.serving(host, version, t0)

    def serving(self, host, version, t0):
        """Wait until host answers ANSWERS requests with version, sent from
        now on, and runs one master and its workers only (the old ones have left)."""
        self.lab.load.wait_answer(host.name, version, time.monotonic(), ANSWERS)
        wait(lambda: len(pids_in(host.net.namespace)) == 1 + WORKERS, 20,
             f"{host.name}: one master and {WORKERS} workers only")
        self.step(host, f"answers with {version} ({ANSWERS} requests); "
                        f"one master and {WORKERS} workers", t0)


def targets(figures, threads):
    """What the figures miss of the targets: a list of sentences ([]: all met)."""
    missed = []
    for f in figures:
        allowed = threads if f.operation == "kill" else 0
        if f.failed > allowed:
            missed.append(f"{f.title}: {f.failed} failed requests (at most {allowed}): "
                          + ", ".join(f"{r} {n}" for r, n in f.reasons.items()))
        if f.operation in ("reload", "upgrade"):
            out = {host: seconds for host, seconds in f.out.items() if seconds > 0}
            if out:
                missed.append(f"{f.title}: hosts out of rotation: "
                              + ", ".join(f"{h} {s:.2f}s" for h, s in out.items()))
    return missed
