"""Processes by pid, without psutil: alive or not, signalled, killed, reaped;
and wait(), the lab's one way to wait: poll a state until a deadline.

The lab makes itself a child subreaper (set_subreaper()), so that a process
that outlives its parent -- the new master of a USR2 upgrade once the old
one has exited, the workers of a SIGKILLed master -- becomes the lab's
child and is reaped by it (reap()) instead of lingering as a zombie of an
init that may not reap.  Every wait here polls a state with a deadline:
none is a fixed sleep.
"""

import ctypes
import os
import signal
import time

from .errors import LabError

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
POLL = 0.01  # seconds between two looks at a state


def set_subreaper(on):
    """Make this process a child subreaper (on) or not (off)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def alive(pid):
    """Whether pid names a process that has not exited (zombies are not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid):
    """Process pid's command line, as a list ([] if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return [arg.decode(errors="replace") for arg in file.read().split(b"\0") if arg]
    except (FileNotFoundError, ProcessLookupError):
        return []


def send(pid, sig):
    """Send sig to pid; False if it is gone already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def reap(pid, timeout):
    """Wait up to timeout seconds for pid to exit; return its exit code (-N
    for signal N) if it was this process's child (adopted ones included),
    None if it exited as another's.  LabError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found, status = os.waitpid(pid, os.WNOHANG)
            if found:
                return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            # Not our child: gone, or exited and left to its parent -- or
            # still running, to be adopted once its parent exits.
            if not alive(pid):
                return None
        if time.monotonic() > deadline:
            raise LabError(f"process {pid} ({' '.join(cmdline(pid)) or '?'}) "
                           f"did not exit within {timeout:g}s")
        time.sleep(POLL)


def wait(predicate, timeout, message, poll=POLL):
    """Poll predicate() until it returns a true value, and return it;
    LabError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(poll)
    return value


def kill_and_reap(pids, timeout=10):
    """SIGKILL every pid of pids, then reap each (see reap()): LabError if
    one is still there after timeout seconds."""
    for pid in pids:
        send(pid, signal.SIGKILL)
    for pid in pids:
        reap(pid, timeout)
