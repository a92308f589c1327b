"""wrk as the load generator of the HTTP workloads, when it is installed.

    wrk -t1 -cCLIENTS -dDURATIONs --latency -H 'Connection: close' URL

Every contender closes after its answer; the header makes gunicorn's gthread
worker, which could keep connections alive, do the same.  A warm-up run
comes first.  wrk times from sending the request to the end of the answer.
"""

import math
import re
import resource
import shutil
import subprocess
import time

from .loadgen import LoadResult

UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value, unit):
    return float(value) * UNITS_MS[unit]


def parse(text):
    """A LoadResult from wrk's --latency report."""
    count, took, unit = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text).groups()
    pct = {p: _ms(v, u) for p, v, u in
           re.findall(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)}
    errors = {}
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", text)
    if socket_errors:
        for kind, n in zip(("connect", "read", "write", "timeout"), socket_errors.groups()):
            if int(n):
                errors[kind] = int(n)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        errors["non-2xx"] = int(non_2xx.group(1))
    return LoadResult(int(count), _ms(took, unit) / 1e3, pct.get("50", 0.0), pct.get("99", 0.0),
                      errors)


class WrkLoad:
    """wrk, found on PATH."""

    def __init__(self, path):
        self.path = path
        banner = subprocess.run([path, "-v"], capture_output=True, text=True).stdout
        self.name = " ".join(banner.split()[:2]) or "wrk"

    @classmethod
    def find(cls):
        path = shutil.which("wrk")
        return cls(path) if path else None

    def describe(self, workload):
        return f"{self.name} -t1 -c{workload.clients}"

    def command(self, workload, address, seconds):
        return [self.path, "-t1", f"-c{workload.clients}", f"-d{seconds}s", "--latency",
                "--timeout", "2s", "-H", "Connection: close",
                f"http://{address[0]}:{address[1]}/"]

    def start(self, workload, address, warmup, duration):
        """Warm up (a run of its own), then start the measured run."""
        if warmup > 0:
            subprocess.run(self.command(workload, address, math.ceil(warmup)),
                           capture_output=True, timeout=warmup + 30)
        seconds = max(1, round(duration))   # wrk takes whole seconds
        return RunningWrk(self.command(workload, address, seconds), seconds)


class RunningWrk:
    """The measured wrk run: count_from and until bound its window."""

    def __init__(self, argv, seconds):
        self.cpu_before = self._children_cpu()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.count_from = time.monotonic()
        self.until = self.count_from + seconds

    @staticmethod
    def _children_cpu():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def finish(self):
        out, _ = self.proc.communicate(timeout=self.until - time.monotonic() + 30)
        ran = time.monotonic() - self.count_from
        if self.proc.returncode != 0 or "requests in" not in out:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {out.strip()[-300:]}")
        result = parse(out)
        result.cores = (self._children_cpu() - self.cpu_before) / ran
        return result

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
