"""The scoreboard: one shared-memory slot per worker, as in Apache's prefork.

The master maps an anonymous shared region before it forks, so every worker
writes its own slot and the master reads them all without any I/O: state,
requests served, a heartbeat, and when the oldest request in flight began.
Times are time.monotonic(), which every process on the host shares.
"""

import ctypes
import mmap
import threading
from time import monotonic

# Slot states.
FREE, BOOTING, IDLE, BUSY, STOPPING = range(5)

ERROR_SIZE = 512


class Slot(ctypes.Structure):
    """One worker's line on the scoreboard."""

    _fields_ = [
        ("pid", ctypes.c_int32),
        ("generation", ctypes.c_int32),
        ("state", ctypes.c_int32),
        ("in_flight", ctypes.c_int32),   # requests being handled now
        ("requests", ctypes.c_uint64),   # requests handled since boot
        ("heartbeat", ctypes.c_double),  # last turn of the worker's loop
        ("request_started", ctypes.c_double),  # oldest request in flight, 0: none
        ("error", ctypes.c_char * ERROR_SIZE),  # why the worker failed to boot
    ]

    def reset(self, generation):
        """Claim the slot for a new worker, before it is forked."""
        ctypes.memset(ctypes.addressof(self), 0, ctypes.sizeof(self))
        self.generation = generation
        self.state = BOOTING
        self.heartbeat = monotonic()

    def set_error(self, text):
        self.error = text.encode("utf-8", "replace")[:ERROR_SIZE - 1]


class Scoreboard:
    """A fixed number of slots in memory shared with every forked worker."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._memory = mmap.mmap(-1, ctypes.sizeof(Slot) * capacity)  # MAP_SHARED
        self.slots = (Slot * capacity).from_buffer(self._memory)

    def claim(self, generation):
        """The index of a free slot, reset for a new worker; None if full."""
        for index, slot in enumerate(self.slots):
            if slot.state == FREE:
                slot.reset(generation)
                return index
        return None

    def release(self, index):
        self.slots[index].state = FREE

    def close(self):
        del self.slots
        self._memory.close()


class SlotWriter:
    """A worker's side of its slot, for a worker that handles one request at
    a time in its loop's thread (sync, and forking: its children never write)."""

    def __init__(self, slot):
        self.slot = slot

    def heartbeat(self, now):
        self.slot.heartbeat = now

    def set_state(self, state):
        self.slot.state = state
        self.slot.heartbeat = monotonic()

    def request_begins(self):
        slot = self.slot
        slot.request_started = monotonic()
        slot.in_flight = 1
        slot.state = BUSY

    def request_ends(self, token=None):
        slot = self.slot
        slot.in_flight = 0
        slot.request_started = 0.0
        slot.requests += 1
        slot.heartbeat = monotonic()  # idle again: the liveness clock restarts now
        slot.state = IDLE

    def wait_for_requests(self):
        """Nothing can be in flight once the loop has returned."""


class ThreadedSlotWriter(SlotWriter):
    """The slot of a threading worker: requests run in their own threads, so
    the accounting takes a lock, and tracks the oldest request in flight --
    what the master's request_timeout measures.  A request run in the loop's
    own thread (threads.py) makes the worker busy: its loop does not turn."""

    def __init__(self, slot, loop_thread):
        super().__init__(slot)
        self._loop_thread = loop_thread
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
            if threading.get_ident() == self._loop_thread:
                slot.state = BUSY
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
                slot.state = IDLE

    def wait_for_requests(self):
        """Block until no request is in flight (a graceful stop)."""
        with self._lock:
            while self._started:
                self._lock.wait()
