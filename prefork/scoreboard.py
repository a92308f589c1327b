"""The scoreboard: one shared-memory slot per worker, as in Apache's prefork.

The master maps an anonymous shared region before it forks, so every worker
writes its own slot (through a SlotWriter) and the master reads them all
without any I/O (through Scoreboard.read()): state, requests served, a
heartbeat, and when the oldest request in flight began.  Times are
time.monotonic(), which every process on the host shares.

The workers are the less trusted side (after a privilege drop they run as
another user): the master acts only on what it knows itself -- pids from
fork(), slot indexes it handed out -- and read() sanitises every field
before anyone sees it.
"""

import ctypes
import enum
import math
import mmap
import threading
from time import monotonic

ERROR_SIZE = 512


class SlotState(enum.IntEnum):
    """A worker's own account of what it is doing."""

    FREE = 0      # no worker: the master may hand the slot out
    BOOTING = 1   # forked, not serving yet
    IDLE = 2      # waiting for a request
    BUSY = 3      # its loop's thread is running a request
    STOPPING = 4  # no longer taking requests: finishing those in flight


class Slot(ctypes.Structure):
    """One worker's line on the scoreboard, as laid out in shared memory."""

    _fields_ = [
        ("pid", ctypes.c_int32),          # for display only: never acted on
        ("generation", ctypes.c_int32),   # set by the master when it hands the slot out
        ("state", ctypes.c_int32),        # a SlotState
        ("in_flight", ctypes.c_int32),    # requests being handled now
        ("requests", ctypes.c_uint64),    # requests handled since boot
        ("heartbeat", ctypes.c_double),   # last sign of life of the worker's loop
        ("request_started", ctypes.c_double),  # oldest request in flight, 0: none
        ("error", ctypes.c_char * ERROR_SIZE),  # why the worker failed to boot
        ("server_stops", ctypes.c_int32),  # set by the master: its stop is the whole server's
    ]


class SlotView:
    """A copy of one slot, read once and sanitised: what the master and a
    status report see.  Fields: state (a SlotState), pid, generation,
    in_flight, requests, heartbeat, request_started (None: no request in
    flight) and error (str)."""

    __slots__ = ("state", "pid", "generation", "in_flight", "requests",
                 "heartbeat", "request_started", "error")

    def __init__(self, slot):
        try:
            self.state = SlotState(slot.state)
        except ValueError:
            self.state = SlotState.BUSY  # garbage: not idle, not ready to trust
        self.pid = max(0, slot.pid)
        self.generation = max(0, slot.generation)
        self.in_flight = max(0, slot.in_flight)
        self.requests = slot.requests
        self.heartbeat = _finite(slot.heartbeat)
        self.request_started = _finite(slot.request_started) or None
        self.error = slot.error.decode("utf-8", "replace")

    @property
    def idle(self):
        """Whether the worker waits for a request, none in flight."""
        return self.state is SlotState.IDLE and not self.in_flight

    @property
    def booted(self):
        """Whether the worker has finished booting (it may be stopping since)."""
        return self.state not in (SlotState.FREE, SlotState.BOOTING)


# The writers' hot path uses plain ints: an enum member costs a lookup per use.
_IDLE, _BUSY = int(SlotState.IDLE), int(SlotState.BUSY)


def _finite(value):
    return value if math.isfinite(value) else 0.0


class Scoreboard:
    """A fixed number of slots in memory shared with every forked worker."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._memory = mmap.mmap(-1, ctypes.sizeof(Slot) * capacity)  # MAP_SHARED
        self._slots = (Slot * capacity).from_buffer(self._memory)

    def claim(self, generation):
        """The index of a free slot, reset for a new worker; None if full."""
        for index, slot in enumerate(self._slots):
            if slot.state == SlotState.FREE:
                ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(slot))
                slot.generation = generation
                slot.state = SlotState.BOOTING
                slot.heartbeat = monotonic()
                return index
        return None

    def read(self, index):
        """A sanitised copy of slot `index` (a SlotView)."""
        return SlotView(self._slots[index])

    def release(self, index):
        self._slots[index].state = SlotState.FREE

    def server_stops(self, index):
        """Tell worker `index`, before its TERM, that the whole server stops
        (not a reload's retirement): see SlotWriter.server_stops."""
        self._slots[index].server_stops = 1

    def writer(self, index, threaded):
        """The worker's side of slot `index`: a SlotWriter, or a
        ThreadedSlotWriter for a server whose requests run in threads."""
        slot = self._slots[index]
        return ThreadedSlotWriter(slot) if threaded else SlotWriter(slot)

    def close(self):
        del self._slots
        self._memory.close()


class SlotWriter:
    """A worker's side of its slot, for a worker that handles one request at
    a time in its loop's thread (sync, and forking: its children never write)."""

    def __init__(self, slot):
        self.slot = slot

    def booted(self, pid):
        """The worker is about to serve."""
        self.slot.pid = pid
        self.set_state(SlotState.IDLE)

    def server_stops(self):
        """Whether the master marked this stop as the whole server's: then no
        other worker takes the connections this one leaves in the queue."""
        return bool(self.slot.server_stops)

    def failed_to_boot(self, text):
        self.slot.error = text.encode("utf-8", "replace")[:ERROR_SIZE - 1]

    def heartbeat(self, now):
        self.slot.heartbeat = now

    def busy_heartbeat(self, now):
        """A sign of life while the loop's thread runs a request (from a watcher)."""
        if self.slot.state == _BUSY:
            self.slot.heartbeat = now

    def set_state(self, state):
        self.slot.state = state
        self.slot.heartbeat = monotonic()

    def request_begins(self):
        slot = self.slot
        slot.request_started = monotonic()
        slot.in_flight = 1
        slot.state = _BUSY

    def request_ends(self, token=None):
        slot = self.slot
        slot.in_flight = 0
        slot.request_started = 0.0
        slot.requests += 1
        slot.heartbeat = monotonic()  # idle again: the liveness clock restarts now
        if slot.state == _BUSY:  # (not if it began stopping meanwhile)
            slot.state = _IDLE

    def wait_for_requests(self):
        """Nothing can be in flight once the loop has returned."""


class ThreadedSlotWriter(SlotWriter):
    """The slot of a threading worker: requests run in their own threads, so
    the accounting takes a lock, and tracks the oldest request in flight --
    what the master's request_timeout measures.  A request run in the loop's
    own thread (threads.py) makes the worker busy: its loop does not turn."""

    def __init__(self, slot):
        super().__init__(slot)
        self._loop_thread = threading.get_ident()
        self._lock = threading.Condition(threading.Lock())
        self._started = {}  # token -> start time, oldest first (insertion order)
        self._tokens = 0

    def request_begins(self):
        now = monotonic()
        with self._lock:
            self._tokens += 1
            token = self._tokens
            self._started[token] = now
            slot = self.slot
            slot.in_flight += 1
            if slot.in_flight == 1:
                slot.request_started = now
            if threading.get_ident() == self._loop_thread and slot.state == _IDLE:
                slot.state = _BUSY
        return token

    def request_ends(self, token):
        with self._lock:
            del self._started[token]
            slot = self.slot
            slot.in_flight -= 1
            slot.requests += 1
            if self._started:
                slot.request_started = next(iter(self._started.values()))
            else:
                slot.request_started = 0.0
                self._lock.notify_all()
            if threading.get_ident() == self._loop_thread:
                slot.heartbeat = monotonic()
                if slot.state == _BUSY:
                    slot.state = _IDLE

    def wait_for_requests(self):
        """Block until no request is in flight (a graceful stop)."""
        with self._lock:
            while self._started:
                self._lock.wait()
