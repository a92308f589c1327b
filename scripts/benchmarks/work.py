"""The bytes and the work of one request, the same in every contender's server."""

import itertools
import os
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
LOOPS_ENV = "BENCH_CPU_LOOPS"      # burn() loops for CPU_SECONDS, set by the bench


def burn(loops):
    """Pure-Python work: holds the GIL for the whole loop."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


def calibrate(seconds=CPU_SECONDS, probe_loops=50000, rounds=7):
    """How many burn() loops take `seconds` on this machine (best of a few rounds)."""
    best = min(_timed(burn, probe_loops) for _ in range(rounds))
    return max(1, round(probe_loops * seconds / best))


def _timed(function, arg):
    start = time.perf_counter()
    function(arg)
    return time.perf_counter() - start


def work_for(handler):
    """The extra work of an HTTP handler: None, a CPU burn or a sleep."""
    if handler == "cpu":
        loops = int(os.environ[LOOPS_ENV])
        return lambda: burn(loops)
    if handler == "slow":
        return lambda: time.sleep(SLOW_SECONDS)
    if handler == "mixed":
        heavy = int(os.environ[LOOPS_ENV]) * round(MIXED_CPU_SECONDS / CPU_SECONDS)
        requests = itertools.count(1)
        return lambda: (burn(heavy) if next(requests) % MIXED_EVERY == 0
                        else time.sleep(MIXED_SLEEP_SECONDS))
    return None
