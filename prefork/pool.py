"""What the master knows of its workers: one WorkerRecord each, in a Pool.

Only the master reads or writes these; the hooks see a record's
WorkerInfo, never the record.  A record's pid comes from fork(): the one
fact about a worker the master acts on without checking.
"""

import enum

from .scoreboard import SlotState


class Lifecycle(enum.Enum):
    """Where a worker is, as the master has seen it."""

    BOOTING = "booting"    # forked; its slot does not say it booted yet
    SERVING = "serving"    # booted and taking requests
    STOPPING = "stopping"  # sent TERM or QUIT, or stopping on its own
    KILLED = "killed"      # sent SIGKILL: waiting to be reaped


class Retire(enum.Enum):
    """Why the master wants a worker gone."""

    RELOAD = "replaced by a new generation"
    FEWER = "fewer workers wanted"
    AGE = "past max_worker_age"
    OWN = "stopping on its own"  # max_requests, max_worker_memory, a handler's shutdown()
    FAILED_RELOAD = "its generation failed to boot"
    STOP = "the master is stopping"


class WorkerRecord:
    """One worker, as the master keeps it.

    info: the WorkerInfo the hooks see (number, generation, pid, born).
    slot: its scoreboard index.  state: a Lifecycle.  retire: a Retire once
    the master wants it gone (it is asked to stop once its replacement is
    ready, or at once).  asked_at: when it was sent TERM/QUIT, or seen
    stopping on its own -- graceful_timeout runs from there.  killed_for:
    why it was SIGKILLed.
    """

    def __init__(self, info, slot):
        self.info = info
        self.slot = slot
        self.state = Lifecycle.BOOTING
        self.retire = None
        self.asked_at = None
        self.killed_for = None
        self.process = None  # its psutil.Process, made by the first status

    def follow(self, view, now):
        """Move along what the worker's slot says of it; True once it has booted."""
        booted = self.state is Lifecycle.BOOTING and view.booted
        if booted:
            self.state = Lifecycle.SERVING
        if view.state is SlotState.STOPPING and self.asked_at is None:
            self.retire = self.retire or Retire.OWN  # max_requests, memory, ...
            self.state = Lifecycle.STOPPING
            self.asked_at = now
        return booted

    def overdue(self, view, now, settings):
        """Why the worker must be killed now, if it must: the timeout it broke.

        Booting: boot_timeout.  Asked to stop: graceful_timeout.  Otherwise
        liveness_timeout (its loop beats when idle, a watcher while its loop's
        thread runs a request: a stopped or wedged process beats neither) and
        request_timeout (the oldest request in flight).
        """
        if self.state is Lifecycle.BOOTING:
            if now - self.info.born > settings.boot_timeout:
                return f"did not boot within {settings.boot_timeout}s"
        elif self.asked_at is not None:
            if now - self.asked_at > settings.graceful_timeout:
                return f"still running {settings.graceful_timeout}s after being asked to stop"
        elif now - view.heartbeat > settings.liveness_timeout:
            return f"no heartbeat for {now - view.heartbeat:.1f}s: stopped or wedged"
        elif (settings.request_timeout and view.request_started
              and now - view.request_started > settings.request_timeout):
            return (f"a request ran {now - view.request_started:.1f}s, "
                    f"past request_timeout ({settings.request_timeout}s)")
        return None

    def too_old(self, now, max_age):
        return max_age is not None and now - self.info.born > max_age

    @property
    def pid(self):
        return self.info.pid

    @property
    def generation(self):
        return self.info.generation

    def __repr__(self):
        return f"<record {self.info!r} {self.state.value} retire={self.retire}>"


class Pool:
    """The master's workers, by pid, with the questions the master asks of them."""

    def __init__(self):
        self._records = {}

    def add(self, record):
        self._records[record.pid] = record

    def remove(self, record):
        del self._records[record.pid]

    def __iter__(self):
        return iter(list(self._records.values()))

    def __len__(self):
        return len(self._records)

    def wanted(self):
        """The workers the master means to keep, oldest first."""
        return sorted((r for r in self if r.retire is None), key=lambda r: r.info.born)

    def awaiting_replacement(self):
        """Retired workers not asked to stop yet, oldest first."""
        return sorted((r for r in self if r.retire is not None and r.asked_at is None),
                      key=lambda r: r.info.born)

    def any_serving(self):
        return any(r.state is Lifecycle.SERVING for r in self)
