"""A load step (the scaling workload): clients 1 -> 40 -> 1, over time.

The clients of one generator process (clients.HTTPClient, one connection per
request) follow a schedule of phases -- (seconds, clients) -- and note when
each request ends and how long it took.  Meanwhile the bench counts the
server's workers (the root's live children) every SAMPLE_EVERY seconds.  The
row is a time series: per interval, the clients wanted, the workers, the
requests that ended and their p99 latency; and per phase, a summary.

A client asked to leave (40 -> 1) finishes its request first: the slowest
requests of a saturated pool are measured, not dropped.  Requests time out
after STEP_TIMEOUT, far above wrk's 2 s, for the same reason.
"""

import multiprocessing
import signal
import time
from array import array
from collections import Counter

import psutil

from . import clients
from .loadgen import percentile
from .measure import _server

SAMPLE_EVERY = 0.25    # seconds: a worker count and a p99 per interval
STEP_TIMEOUT = 10.0    # seconds a request may take before it counts as an error
LOW, HIGH = 1, 40      # clients before/after, and during the step
PHASES = ((2.0, LOW), (10.0, HIGH), (6.0, LOW))         # (seconds, clients)
QUICK_PHASES = ((1.0, LOW), (6.0, HIGH), (3.0, LOW))
START_DELAY = 0.3      # seconds for the generator process to start before t = 0


def phases_for(quick):
    return QUICK_PHASES if quick else PHASES


def seconds(phases):
    """The phases' lengths, as "2+10+6 s"."""
    return "+".join(f"{s:g}" for s, _ in phases) + " s"


def describe(phases):
    return (" \u2192 ".join(f"{clients} client{'s' * (clients > 1)} for {seconds:g} s"
                            for seconds, clients in phases)
            + f" (built-in generator, one process; requests time out after {STEP_TIMEOUT:g} s)")


def clients_at(phases, t):
    """How many clients the schedule wants t seconds after its start."""
    end = 0.0
    for seconds, count in phases:
        end += seconds
        if t < end:
            return count
    return 0


class StepTally:
    """Every request that ends: when (monotonic), how long it took, or why it failed."""

    def __init__(self):
        self.ends, self.latencies = array("d"), array("d")
        self.failures = []   # (when, kind)

    def success(self, began, now):
        self.ends.append(now)
        self.latencies.append(now - began)

    def failure(self, kind, now):
        self.failures.append((now, kind))


class StepClient(clients.HTTPClient):
    """An HTTP client that, once told to leave, ends after its request in flight."""

    timeout = STEP_TIMEOUT
    leaving = False

    def begin(self, now):
        if self.leaving:
            self.drop()
            self.began = None
        else:
            super().begin(now)


def drive(address, phases, start):
    """Run the schedule from `start` (monotonic); return its StepTally."""
    loop = clients._Loop(StepTally())
    active, leaving = [], []
    boundaries, end = [], start
    for seconds, count in phases:
        boundaries.append((end, count))
        end += seconds
    time.sleep(max(0.0, start - time.monotonic()))
    now = time.monotonic()
    loop.next_check = now + clients.CHECK_EVERY
    try:
        while now < end:
            while boundaries and boundaries[0][0] <= now:
                _, count = boundaries.pop(0)
                while len(active) < count:
                    client = StepClient(loop, address)
                    active.append(client)
                    client.begin(now)
                while len(active) > count:
                    client = active.pop()
                    client.leaving = True
                    leaving.append(client)
            wake = min([end] + [b[0] for b in boundaries[:1]])
            now = loop.turn(active + leaving, max(0.0, min(clients.CHECK_EVERY, wake - now)))
    finally:
        for client in active + leaving:
            client.drop()
        loop.selector.close()
    return loop.tally


def _generate(conn, address, phases, start):
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the bench stops us
    tally = drive(address, phases, start)
    conn.send((tally.ends, tally.latencies, tally.failures))
    conn.close()


def live_children(pid):
    """The server's workers now: the root's children that have not exited."""
    try:
        return sum(1 for child in psutil.Process(pid).children()
                   if child.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return 0


def measure_step(contender, workload, settings, phases):
    """The row of `contender` under the load step: a time series and per-phase figures."""
    address, server = _server(contender, workload, settings, "")
    context = multiprocessing.get_context("fork")
    with server:
        server.wait_ready(lambda: clients.one_request("http", address))
        start = time.monotonic() + START_DELAY
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_generate, args=(sender, address, phases, start),
                               daemon=True)
        proc.start()
        sender.close()
        try:
            workers = _sample_workers(server, start, sum(s for s, _ in phases))
            if not receiver.poll(STEP_TIMEOUT + 10):
                raise RuntimeError("the step's load generator did not report")
            ends, latencies, failures = receiver.recv()
        finally:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            receiver.close()
    return _row(contender, workload, phases, start, workers, ends, latencies, failures)


def _sample_workers(server, start, seconds):
    """[workers] at start + k * SAMPLE_EVERY, for k up to seconds / SAMPLE_EVERY."""
    counts = []
    for k in range(round(seconds / SAMPLE_EVERY) + 1):
        delay = start + k * SAMPLE_EVERY - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {server.proc.returncode}\n"
                               f"{server.log_tail()}")
        counts.append(live_children(server.proc.pid))
    return counts


def _bins(width, phases, start, workers, ends, latencies):
    """Per interval of `width` seconds: its start t, the clients wanted then, the
    workers sampled at its end, and the requests that ended in it (count, p99)."""
    count = round((len(workers) - 1) * SAMPLE_EVERY / width)
    per = round(width / SAMPLE_EVERY)
    bins = [[] for _ in range(count)]
    for end, latency in zip(ends, latencies):
        k = int((end - start) // width)
        if 0 <= k < count:
            bins[k].append(latency)
    series = []
    for k, lats in enumerate(bins):
        lats.sort()
        series.append({"t": k * width, "clients": clients_at(phases, k * width),
                       "workers": workers[min(len(workers) - 1, (k + 1) * per)],
                       "requests": len(lats),
                       "p99_ms": percentile(lats, 0.99) * 1e3 if lats else None})
    return series


def _phases(phases, start, workers, ends, latencies):
    """Per phase: its clients, requests/s, p50 and p99, and the workers sampled in it."""
    summary, begin = [], 0.0
    for seconds, count in phases:
        lats = sorted(lat for end, lat in zip(ends, latencies)
                      if begin <= end - start < begin + seconds)
        counts = [n for k, n in enumerate(workers)
                  if begin <= k * SAMPLE_EVERY <= begin + seconds]
        summary.append({"from": begin, "seconds": seconds, "clients": count,
                        "requests": len(lats), "rps": len(lats) / seconds,
                        "p50_ms": percentile(lats, 0.50) * 1e3,
                        "p99_ms": percentile(lats, 0.99) * 1e3,
                        "workers_start": counts[0], "workers_max": max(counts),
                        "workers_end": counts[-1]})
        begin += seconds
    return summary


def _row(contender, workload, phases, start, workers, ends, latencies, failures):
    errors = Counter(kind for _, kind in failures)
    summary = _phases(phases, start, workers, ends, latencies)
    high = max(summary, key=lambda p: p["clients"])
    return {"workload": workload.key, "contender": contender.name, "family": contender.family,
            "workers": contender.workers, "requests": len(ends),
            "errors": sum(errors.values()), "error_kinds": dict(errors),
            "p99_ms": high["p99_ms"], "step_rps": high["rps"],
            "phases": summary,
            "per_second": _bins(1.0, phases, start, workers, ends, latencies),
            "series": _bins(SAMPLE_EVERY, phases, start, workers, ends, latencies)}
