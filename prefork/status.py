"""What an operator sees of a running master: its status as a dict (the
control socket's `status` answer) and as a table (`prefork status`).

The master builds it from what it knows (pids from fork(), its own counts)
and from each worker's sanitised scoreboard slot; psutil adds each worker's
memory and CPU.  Nothing read from a slot is acted on.
"""

import collections

from .listeners import format_address

RATE_WINDOW = 60.0  # seconds over which requests/s is measured


class RequestTally:
    """Requests served by the pool: those of the workers that have exited,
    plus the live ones' counts, sampled once a second for the rate."""

    def __init__(self):
        self.exited = 0
        self.samples = collections.deque()  # (monotonic time, total)

    def start(self, now):
        """Count from now: the rate includes every request since the start."""
        self.samples.append((now, 0))

    def worker_exited(self, requests):
        self.exited += requests

    def sample(self, now, live_requests):
        total = self.exited + live_requests
        if not self.samples or now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, total))
            while now - self.samples[0][0] > RATE_WINDOW:
                self.samples.popleft()
        return total

    def rate(self, now, total):
        """Requests per second over the last minute (or since the start)."""
        if not self.samples or now - self.samples[0][0] < 0.5:
            return 0.0
        first_time, first_total = self.samples[0]
        return max(0.0, (total - first_total) / (now - first_time))


def master_status(master, now):
    """The control socket's answer to `status`: a JSON-ready dict."""
    server = master.server
    workers = []
    live = 0
    for record in master.pool:
        view = master.scoreboard.read(record.slot)
        live += view.requests
        workers.append(_worker_status(record, view, now))
    total = master.tally.sample(now, live)
    return {
        "master": {
            "pid": master.pid,
            "uptime": round(now - master.started, 3),
            "generation": master.generation,
            "state": master.state(),
            "workers": server.workers,
            "listeners": [_address(sock) for sock in server.listeners],
            "requests": total,
            "requests_per_second": round(master.tally.rate(now, total), 2),
        },
        "workers": sorted(workers, key=lambda worker: worker["number"]),
    }


def _worker_status(record, view, now):
    state = view.state.name.lower() if record.retire is None else "retiring"
    if record.state.value == "booting":
        state = "booting"
    memory, cpu = _usage(record)
    return {
        "number": record.info.number,
        "pid": record.pid,
        "generation": record.generation,
        "state": state,
        "requests": view.requests,
        "request_age": round(now - view.request_started, 3) if view.request_started else None,
        "rss": memory,
        "cpu_percent": cpu,
        "age": round(now - record.info.born, 3),
    }


def _usage(record):
    """(RSS bytes, CPU % since the last status) of a worker, from psutil
    (imported here: `import prefork` itself never needs it)."""
    import psutil
    try:
        if record.process is None:
            record.process = psutil.Process(record.pid)
        with record.process.oneshot():
            return record.process.memory_info().rss, record.process.cpu_percent(None)
    except psutil.Error:
        return None, None


def _address(sock):
    try:
        return format_address(sock.getsockname())
    except OSError:
        return "(closed)"


# -- the table ------------------------------------------------------------------------

COLUMNS = [("WORKER", "number", "{}"), ("PID", "pid", "{}"), ("GEN", "generation", "{}"),
           ("STATE", "state", "{}"), ("REQUESTS", "requests", "{}"),
           ("REQUEST", "request_age", "{:.1f}s"), ("RSS", "rss", None),
           ("CPU%", "cpu_percent", "{:.1f}"), ("AGE", "age", None)]


def render(status):
    """The status as ps/mod_status would show it: a header, then a line a worker."""
    master = status["master"]
    lines = [
        f"prefork master {master['pid']}: {master['state']}, up {_duration(master['uptime'])}, "
        f"generation {master['generation']}, workers wanted: {master['workers']}",
        f"listening: {', '.join(master['listeners'])}",
        f"requests: {master['requests']} served, {master['requests_per_second']:.1f}/s "
        f"over the last minute",
        "",
    ]
    rows = [[title for title, _, _ in COLUMNS]]
    for worker in status["workers"]:
        rows.append([_cell(worker[key], key, form) for _, key, form in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines += ["  ".join(cell.rjust(width) if i != 3 else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
              for row in rows]
    return "\n".join(lines)


def _cell(value, key, form):
    if value is None:
        return "-"
    if key == "rss":
        return f"{value / 2**20:.1f}M"
    if key == "age":
        return _duration(value)
    return form.format(value)


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

