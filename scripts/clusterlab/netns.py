"""The lab's network: a namespace per host, joined to the root namespace by a
veth pair, with addresses from one private /24 of the lab's own.

Contract:
- Names carry the owning process's pid: namespace pfk<PID>h<N>, veth ends
  pfk<PID>r<N> (root side) and pfk<PID>n<N> (moved into the namespace).  A
  leftover whose owner is dead is a crashed run's: remove_stale() kills the
  processes still in such a namespace and deletes it and its veths.
- Network(count).create() takes a /24 that overlaps no route and no address
  of the machine (or raises Unavailable), gives host N the /30 block N of it
  (.4N+1 on the root side, .4N+2 inside), brings `lo` up in each namespace and
  gives the veths no IPv6 address: only these addresses and loopback carry
  anything.  remove() deletes all it made, and never fails on what is gone.
- probe() raises Unavailable, with one line, where namespaces cannot be made.
"""

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from . import procs
from .errors import LabError, Unavailable

PREFIX = "pfk"
OWNED = re.compile(rf"^{PREFIX}(\d+)(?:[hrn]\d+|probe)$")  # what a lab names
# Candidate /24s: 10.200.0.0/24 up to 10.207.255.0/24, tried from a place that
# depends on the pid, so that two labs at once rarely even look at the same.
CANDIDATES = [ipaddress.ip_network(f"10.{200 + i // 256}.{i % 256}.0/24") for i in range(2048)]


def ip(*args, check=True):
    """Run `ip ARGS`; its stdout.  LabError with ip's own message if it fails (check)."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise LabError(f"ip {' '.join(args)}: {message[-1] if message else result.returncode}")
    return result.stdout


def ip_json(*args):
    """The parsed output of `ip -j ARGS` ([] when ip prints nothing)."""
    text = ip("-j", *args)
    return json.loads(text) if text.strip() else []


def pids_in(namespace):
    """The pids of the processes in a namespace (`ip netns pids`); [] if it is gone."""
    return [int(word) for word in ip("netns", "pids", namespace, check=False).split()]


def probe():
    """Raise Unavailable unless this process may create a network namespace."""
    if os.geteuid() != 0:
        raise Unavailable("the cluster lab needs root (network namespaces, veth pairs, HAProxy)")
    name = f"{PREFIX}{os.getpid()}probe"
    try:
        ip("netns", "add", name)
    except (LabError, FileNotFoundError) as error:
        raise Unavailable(f"network namespaces are unavailable here: {error}") from None
    ip("netns", "delete", name, check=False)


def taken_networks():
    """The IPv4 networks of every route (all tables) and address of the machine."""
    taken = []
    for route in ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "default")
        if dst != "default":
            taken.append(ipaddress.ip_network(dst, strict=False))
    for link in ip_json("-4", "addr"):
        for info in link.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                              strict=False))
    return taken


def free_subnet():
    """A candidate /24 that overlaps nothing taken; Unavailable if none is free."""
    taken = taken_networks()
    start = os.getpid() % len(CANDIDATES)
    for subnet in CANDIDATES[start:] + CANDIDATES[:start]:
        if not any(subnet.overlaps(network) for network in taken):
            return subnet
    raise Unavailable(f"no free private /24 for the lab among {CANDIDATES[0]} .. "
                      f"{CANDIDATES[-1]}: every one overlaps a route or an address")


@contextlib.contextmanager
def allocation_lock():
    """Held while a lab picks its /24 and adds its routes, so that two labs
    started at once never pick the same.  An advisory lock on the temporary
    directory itself: only labs take it, and no file is left behind."""
    fd = os.open(tempfile.gettempdir(), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class HostNet:
    """One host's namespace and addresses."""

    index: int          # 1, 2, 3
    namespace: str
    address: str        # inside the namespace: where the host listens
    gateway: str        # the root namespace's end of the veth pair
    veth_root: str
    veth_ns: str

    @property
    def name(self):
        return f"h{self.index}"


class Network:
    """`count` namespaces joined to the root namespace (see the module's docstring)."""

    def __init__(self, count, owner=None):
        self.owner = owner or os.getpid()
        self.count = count
        self.subnet = None
        self.hosts = []

    def create(self):
        with allocation_lock():
            self.subnet = free_subnet()
            base = self.subnet.network_address
            for index in range(1, self.count + 1):
                tag = f"{PREFIX}{self.owner}"
                host = HostNet(index, f"{tag}h{index}", str(base + 4 * index + 2),
                               str(base + 4 * index + 1), f"{tag}r{index}", f"{tag}n{index}")
                self.hosts.append(host)  # before it exists: remove() takes what was made
                self._create_host(host)
        return self

    def _create_host(self, host):
        ns = host.namespace
        ip("netns", "add", ns)
        ip("link", "add", host.veth_root, "type", "veth", "peer", "name", host.veth_ns)
        ip("link", "set", host.veth_root, "addrgenmode", "none")  # no IPv6 link-local
        ip("link", "set", host.veth_ns, "netns", ns)
        ip("-n", ns, "link", "set", host.veth_ns, "addrgenmode", "none")
        ip("addr", "add", f"{host.gateway}/30", "dev", host.veth_root)
        ip("-n", ns, "addr", "add", f"{host.address}/30", "dev", host.veth_ns)
        ip("link", "set", host.veth_root, "up")
        ip("-n", ns, "link", "set", host.veth_ns, "up")
        ip("-n", ns, "link", "set", "lo", "up")

    def remove(self):
        """Delete every namespace and veth made (their processes must be gone:
        a namespace still holding one is killed first)."""
        for host in self.hosts:
            remove_namespace(host.namespace)
            remove_link(host.veth_root)
            remove_link(host.veth_ns)  # still in the root namespace if create() stopped early
        self.hosts = []


def remove_namespace(name):
    """Kill what still runs in namespace `name`, then delete it (if it exists)."""
    if name in namespaces():
        procs.kill_and_reap(pids_in(name))
        ip("netns", "delete", name, check=False)


def remove_link(name):
    """Delete a link of the root namespace, if it is there (deleting one end
    of a veth pair deletes both)."""
    ip("link", "delete", name, check=False)


def namespaces():
    """The names of the network namespaces (`ip netns list`)."""
    return [entry["name"] for entry in ip_json("netns", "list")]


def links():
    """The names of the links of the root namespace."""
    return [link["ifname"] for link in ip_json("link", "show")]


def stale(names):
    """Those of names that a lab made and whose owner is dead."""
    found = []
    for name in names:
        match = OWNED.match(name)
        if match and not procs.alive(int(match.group(1))):
            found.append(name)
    return found


def remove_stale():
    """Remove the namespaces and veths of crashed labs (their processes are
    killed first); return the names removed."""
    removed = stale(namespaces())
    for name in removed:
        remove_namespace(name)
    links_left = stale(links())
    for name in links_left:
        remove_link(name)
    return removed + links_left


def owned_by(owner):
    """The namespaces and links of the root namespace that lab `owner` made
    and that are still there (for a check that a lab cleaned up)."""
    tag = f"{PREFIX}{owner}"
    return [name for name in namespaces() + links()
            if OWNED.match(name) and name.startswith(tag) and name[len(tag)].isalpha()]
