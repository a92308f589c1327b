"""Which hosts HAProxy has in rotation, over time: its stats, polled.

Contract: Rotation(haproxy) polls `show stat` every POLL seconds in a thread
from start() to stop(), and keeps each server's changes of state with their
time (time.monotonic()).  A server is in rotation while its status starts
with "UP" ("UP 1/2" is a server going down that still takes requests);
DOWN, "DOWN 1/2" (coming up), MAINT and the rest are out.
- wait(name, in_rotation, timeout): until HAProxy says so (LabError after timeout).
- out_seconds(name, start, end): how long the server was out of rotation
  within [start, end]; with a 10 ms poll, the figures are good to ~10 ms.
- statuses(name, start, end): the statuses it went through, for the log.
"""

import threading
import time

from .errors import LabError

POLL = 0.01  # seconds


def in_rotation(status):
    return status.startswith("UP")


class Rotation:
    """HAProxy's servers' states over time (see the module's docstring)."""

    def __init__(self, haproxy):
        self.haproxy = haproxy
        self.changes = {}    # name -> [(time, status)], the first when polling began
        self.error = None    # why polling stopped early, if it did
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation", daemon=True)

    def start(self):
        self._poll()  # the first states are known when start() returns
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self):
        while not self._stopping.wait(POLL):
            try:
                self._poll()
            except OSError as error:  # HAProxy gone: the waits say so
                self.error = error
                with self._changed:
                    self._changed.notify_all()
                return

    def _poll(self):
        now = time.monotonic()
        states = self.haproxy.states()
        with self._changed:
            for name, status in states.items():
                history = self.changes.setdefault(name, [])
                if not history or history[-1][1] != status:
                    history.append((now, status))
            self._changed.notify_all()

    def status(self, name):
        with self._changed:
            return self.changes[name][-1][1]

    def wait(self, name, rotating, timeout=20):
        """Wait until HAProxy has server `name` in rotation (rotating) or out;
        return the time of that change."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                when, status = self.changes[name][-1]
                if in_rotation(status) == rotating:
                    return when
                if self.error:
                    raise LabError(f"HAProxy's stats socket stopped answering: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"timed out after {timeout:g}s waiting for HAProxy to "
                                   f"take {name} {'in' if rotating else 'out'} "
                                   f"(status {status!r})")
                self._changed.wait(left)

    def out_seconds(self, name, start, end):
        """Seconds server `name` was out of rotation between start and end."""
        with self._changed:
            history = list(self.changes.get(name, []))
        total = 0.0
        for i, (when, status) in enumerate(history):
            until = history[i + 1][0] if i + 1 < len(history) else end
            if not in_rotation(status):
                total += max(0.0, min(until, end) - max(when, start))
        return total

    def statuses(self, name, start, end):
        """The statuses server `name` had between start and end, in order."""
        with self._changed:
            history = list(self.changes.get(name, []))
        before = [status for when, status in history if when <= start][-1:]
        return before + [status for when, status in history if start < when <= end]
