"""The multi-host rolling test (issue 12 point 2): prefork hosts behind a real
HAProxy, rolled host by host under load, with no failed request.

scripts/clusterlab (also run by ./scripts/cluster, for a person to watch)
makes three network namespaces joined to the root namespace by veth pairs,
runs the real `prefork` command in each (--health-bind, --drain-delay 1),
HAProxy in front (health checks on the health listener), 8 client threads
through HAProxy, and rolls every host in turn: drain + TERM + start the new
version; a HUP reload; a USR2 upgrade; then one host SIGKILLed outright.
Targets: no failed request for the planned operations, and no host out of
rotation during a reload or an upgrade; for the SIGKILL, at most one failed
request per client thread (those in flight on that host).  Then nothing the
lab made is left.  As root only; HAProxy is installed with apt-get when
missing; each reason to skip is one line.
"""

import contextlib
import os
import subprocess
import sys
import tempfile

import pytest

from support import ROOT, wait_for

# The lab is a package of scripts/ (./scripts/cluster runs it too), not of
# prefork: make it importable here.
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from clusterlab import netns, procs  # noqa: E402
from clusterlab.errors import Unavailable  # noqa: E402
from clusterlab.lab import Lab, remove_stale  # noqa: E402
from clusterlab.report import table  # noqa: E402
from clusterlab.roll import Roll, targets  # noqa: E402

THREADS = 8


@pytest.mark.timeout(150)  # ~10 s of roll; room for apt-get to install HAProxy
def test_rolling_every_host_under_load_fails_no_planned_request():
    with contextlib.ExitStack() as stack:
        try:
            lab = stack.enter_context(
                Lab(hosts=3, threads=THREADS, rate=200, duration=60, drain_delay=1.0))
        except Unavailable as error:
            pytest.skip(f"cluster lab: {error}")
        figures = Roll(lab).run()
        names = [host.name for host in lab.hosts]
        print(table(figures, names))
        assert targets(figures, THREADS) == [], table(figures, names)
        by_operation = {f.operation: f for f in figures}
        assert all(f.sent > 0 for f in figures), figures
        # Each restarted host was taken out by its health check (503 draining),
        # and the killed one by HAProxy's failed checks.
        assert all(seconds > 0 for seconds in by_operation["restart"].out.values()), figures
        assert by_operation["kill"].out["h1"] > 0, figures
        made = [host.master for host in lab.hosts], lab.haproxy.popen.pid, lab.directory
    # Torn down: nothing the lab made is left.
    masters, haproxy_pid, directory = made
    assert netns.owned_by(os.getpid()) == []
    assert not os.path.exists(directory)
    assert not any(map(procs.alive, [*masters, haproxy_pid]))


@pytest.mark.timeout(30)
def test_a_crashed_labs_leftovers_are_removed(spawn):
    """A namespace (with a process in it), a veth and a directory named for a
    lab whose process is dead are removed by the next lab."""
    try:
        netns.probe()
    except Unavailable as error:
        pytest.skip(f"cluster lab: {error}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{netns.PREFIX}{dead.pid}"
    netns.ip("netns", "add", f"{tag}h1")
    netns.ip("link", "add", f"{tag}r2", "type", "veth", "peer", "name", f"{tag}n2")
    directory = tempfile.mkdtemp(prefix=f"{tag}-")
    inside = spawn(["ip", "netns", "exec", f"{tag}h1", "sleep", "60"])
    wait_for(lambda: netns.pids_in(f"{tag}h1"), message="the process in the namespace")
    removed = remove_stale()
    assert {f"{tag}h1", f"{tag}r2", directory} <= set(removed)
    assert netns.owned_by(dead.pid) == []
    assert not os.path.exists(directory)
    assert not procs.alive(inside.pid)  # killed, and reaped (by remove_stale)
