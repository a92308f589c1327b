"""The built-in load generator: clients spread over several processes.

Each process runs clients.drive() on its share of the clients, so the
generator uses every core rather than one GIL.  Requests count from the end
of the warm-up to the end of the run.  LoadResult is what any generator
(this one or wrk) reports.
"""

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field

from . import clients


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict = field(default_factory=dict)   # kind -> count
    cores: float = 0.0                            # CPU the generator itself used

    @property
    def rps(self):
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(ordered, fraction):
    """Nearest-rank percentile of a sorted sequence (0.0 if empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _generate(conn, protocol, address, count, count_from, until):
    """A generator process: drive its clients, send back the tally and its CPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the bench stops us
    started, cpu = time.monotonic(), time.process_time()
    tally = clients.drive(protocol, address, count, count_from, until)
    conn.send((tally.ok, dict(tally.errors), tally.latencies,
               time.process_time() - cpu, time.monotonic() - started))
    conn.close()


class BuiltinLoad:
    """Python clients in `processes` processes."""

    def __init__(self, processes=None):
        self.processes = processes or min(4, max(2, os.cpu_count() or 1))
        self.name = f"built-in Python generator ({self.processes} processes)"

    def describe(self, workload):
        return f"built-in, {workload.clients} clients in {self.processes} processes"

    def start(self, workload, address, warmup, duration):
        return RunningBuiltin(workload.protocol, address, workload.clients,
                              self.processes, warmup, duration)


class RunningBuiltin:
    """A run in progress: count_from and until (monotonic) bound the window."""

    def __init__(self, protocol, address, count, processes, warmup, duration):
        context = multiprocessing.get_context("fork")
        self.count_from = time.monotonic() + warmup
        self.until = self.count_from + duration
        shares = [count // processes + (i < count % processes) for i in range(processes)]
        self.procs, self.pipes = [], []
        for share in filter(None, shares):
            receiver, sender = context.Pipe(duplex=False)
            proc = context.Process(target=_generate, daemon=True,
                                   args=(sender, protocol, address, share,
                                         self.count_from, self.until))
            proc.start()
            sender.close()
            self.procs.append(proc)
            self.pipes.append(receiver)

    def finish(self):
        """Wait for every process; merge their tallies."""
        ok, errors, latencies, cpu, wall = 0, {}, [], 0.0, 0.0
        for pipe in self.pipes:
            if not pipe.poll(max(1.0, self.until - time.monotonic() + 10)):
                raise RuntimeError("a load generator process did not report")
            n, errs, lats, used, ran = pipe.recv()
            ok += n
            latencies.extend(lats)
            cpu, wall = cpu + used, max(wall, ran)
            for kind, count in errs.items():
                errors[kind] = errors.get(kind, 0) + count
        self.abort()
        latencies.sort()
        return LoadResult(ok, self.until - self.count_from,
                          percentile(latencies, 0.50) * 1e3, percentile(latencies, 0.99) * 1e3,
                          errors, cpu / wall if wall else 0.0)

    def abort(self):
        """Stop (if need be) and reap every generator process."""
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for pipe in self.pipes:
            pipe.close()
        self.procs, self.pipes = [], []
