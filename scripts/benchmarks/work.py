"""The bytes and the work of one request, the same in every contender's server."""

import itertools
import time

BODY = b"Hello, World!\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(BODY)) + BODY
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
LINE = b"0123456789abcde\n"        # one echo message: 16 bytes
DATAGRAM_SIZE = 16

CPU_SECONDS = 0.001                # workload (b): Python work per request
SLOW_SECONDS = 0.05                # workload (c): sleep per request
MIXED_EVERY = 10                   # workload (i): one request in 10 is CPU-bound,
MIXED_CPU_SECONDS = 0.005          #   with this much Python work,
MIXED_SLEEP_SECONDS = 0.002        #   the others sleep this long
BURN_CHUNK = 500                   # burn() loops between two looks at the clock (~20 us)


def burn(seconds):
    """Pure-Python work until this thread has run `seconds` of CPU: holds the GIL
    throughout, except where the interpreter hands it over.

    Timed on the thread's own CPU clock, not by a count of loops calibrated
    once: the same loop runs up to 25% faster in one process than in another
    on the same machine (where its memory happens to lie), so a count would
    give each server its own luck.  Time spent waiting for the GIL or the CPU
    is not counted, so every contender does the same work per request."""
    deadline = time.thread_time() + seconds
    total = 0
    while time.thread_time() < deadline:
        for i in range(BURN_CHUNK):
            total += i * i
    return total


def work_for(handler):
    """The extra work of an HTTP handler: None, a CPU burn or a sleep."""
    if handler == "cpu":
        return lambda: burn(CPU_SECONDS)
    if handler == "slow":
        return lambda: time.sleep(SLOW_SECONDS)
    if handler == "mixed":
        requests = itertools.count(1)
        return lambda: (burn(MIXED_CPU_SECONDS) if next(requests) % MIXED_EVERY == 0
                        else time.sleep(MIXED_SLEEP_SECONDS))
    return None
