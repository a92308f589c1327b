"""What runs: the contenders, and the workloads that pit them against each other."""

import signal
from dataclasses import dataclass

from .server import BACKLOG, SERVER_CLASSES

TIMES = "\u00d7"   # the multiplication sign of "prefork sync ×2"


@dataclass(frozen=True)
class Contender:
    """One server, as a command line after the Python executable.

    {handler} and {port} in args are filled in per run (the environment also
    carries BENCH_HANDLER, for the WSGI app of gunicorn and the prefork
    command).  family: prefork, stdlib or gunicorn.  workers: processes
    serving requests (pooled contenders run them under a master).
    """

    name: str
    family: str
    args: tuple
    workers: int = 1
    stop_signal: int = signal.SIGTERM

    @property
    def pooled(self):
        """A master with worker processes, rather than one serving process."""
        return self.family != "stdlib"

    def argv(self, python, handler, port):
        return [python] + [a.format(handler=handler, port=port) for a in self.args]


VARIANT_LABELS = {"exclusive": "", "poll": " (poll)", "reuseport": " (SO_REUSEPORT)",
                  "static": " (adaptive_threads off)"}


def prefork(kind, workers, variant="exclusive"):
    """variant: of prefork's settings (see benchmarks.server.VARIANTS)."""
    label = "UDP" if kind == "udp" else kind
    return Contender(f"prefork {label} {TIMES}{workers}{VARIANT_LABELS[variant]}", "prefork",
                     ("-m", "benchmarks.server", "prefork", kind, "{handler}", "{port}",
                      str(workers), variant), workers)


def stdlib(kind):
    return Contender(f"stdlib {SERVER_CLASSES[kind]}", "stdlib",
                     ("-m", "benchmarks.server", "stdlib", kind, "{handler}", "{port}"))


def gunicorn(workers, threads=0):
    """gunicorn's sync worker, or gthread with `threads` threads per worker."""
    worker_class = ("--worker-class", "gthread", "--threads", str(threads)) if threads else ()
    name = (f"gunicorn gthread {TIMES}{workers} ({threads} threads)" if threads
            else f"gunicorn sync {TIMES}{workers}")
    return Contender(name, "gunicorn",
                     ("-m", "gunicorn", "--workers", str(workers), *worker_class,
                      "--bind", "127.0.0.1:{port}", "--backlog", str(BACKLOG),
                      "--log-level", "warning", "benchmarks.wsgi:app"),
                     workers, stop_signal=signal.SIGQUIT)  # QUIT: gunicorn's quick stop


# No control socket: the command's default path (e.g. /run/prefork-prefork.ctl) is
# one per name, and another master (a test run) may hold it.
NO_CONTROL = ("--control", "none")


def prefork_wsgi(workers, threads=0):
    """The prefork command serving gunicorn's very app (benchmarks.wsgi:app):
    sync workers, or threading ones with `threads` threads (--threads)."""
    worker_class = ("-k", "threading", "--threads", str(threads)) if threads else ()
    name = (f"prefork WSGI threading {TIMES}{workers} ({threads} threads)" if threads
            else f"prefork WSGI sync {TIMES}{workers}")
    return Contender(name, "prefork",
                     ("-m", "prefork", "-w", str(workers), *worker_class,
                      "-b", "127.0.0.1:{port}", "--backlog", str(BACKLOG),
                      "--log-level", "warning", *NO_CONTROL, "benchmarks.wsgi:app"),
                     workers)


def prefork_spare(min_workers, max_workers, spare_min, spare_max):
    """The prefork command's sync workers (the WSGI app) with spare-based scaling:
    between spare_min and spare_max idle, min_workers to max_workers in all."""
    return Contender(f"prefork WSGI sync spare {spare_min}-{spare_max} idle "
                     f"({min_workers}-{max_workers} workers)", "prefork",
                     ("-m", "prefork", "-w", str(min_workers),
                      "--min-workers", str(min_workers), "--max-workers", str(max_workers),
                      "--spare-min", str(spare_min), "--spare-max", str(spare_max),
                      "-b", "127.0.0.1:{port}", "--backlog", str(BACKLOG),
                      "--log-level", "info", *NO_CONTROL,   # info: its scaling lines
                      "benchmarks.wsgi:app"),
                     min_workers)


@dataclass(frozen=True)
class Workload:
    """A handler, a protocol and a number of clients, and who runs it.

    protocol: http (one connection per request), echo (long-lived
    connections, 16-byte lines) or udp (a datagram and its reply).
    reference: the contender the ratios compare with -- or, for a contender
    in one of `pairs` (first, second), the second of its pair.
    startup_runs: if not 0, each contender is also started this many times,
    timed to its first response (measure.startups).
    turns: the contenders an acceptance check compares by a ratio near 1,
    finer than one run's noise on a shared machine: each is measured TURNS
    times, taking turns with the others of `turns`, and the medians kept.
    step: a load step over time (step.py: clients 1, then `clients`, then 1; workers
    and p99 sampled) rather than a steady load: no req/s ratios, its own table
    and plot (scaling.png).
    """

    key: str
    name: str
    title: str
    handler: str
    protocol: str
    clients: int
    reference: str
    contenders: tuple
    pairs: tuple = ()
    startup_runs: int = 0
    step: bool = False
    turns: tuple = ()

    def reference_for(self, name):
        """The contender whose figures `name`'s ratios are multiples of: the
        second of name's pair if it is in one, else the workload's reference."""
        for first, second in self.pairs:
            if name in (first, second):
                return second
        return self.reference


POOL_SIZES = (1, 2, 4)
# Runs of each contender in a workload's `turns`, in every run of the bench;
# each measures two thirds of a row's time (2 of 3 s): with the warm-up each
# run pays, the median of three costs about two and a half rows, not three.
TURNS = 3
TURN_SHARE = 2 / 3

HTTP_CONTENDERS = (
    stdlib("sync"), stdlib("threading"), stdlib("forking"),
    *(prefork("sync", n) for n in POOL_SIZES),
    *(prefork("threading", n) for n in POOL_SIZES),
    *(gunicorn(n) for n in POOL_SIZES),
)

# The WSGI row: the same app under both commands, each pair measured side by side.
WSGI_WORKERS, WSGI_THREADS = 2, 4   # --threads: gunicorn's advice is 2-4 x cores
WSGI_CONTENDERS = (
    prefork_wsgi(WSGI_WORKERS), gunicorn(WSGI_WORKERS),
    prefork_wsgi(WSGI_WORKERS, WSGI_THREADS), gunicorn(WSGI_WORKERS, WSGI_THREADS),
)
WSGI_PAIRS = tuple((WSGI_CONTENDERS[i].name, WSGI_CONTENDERS[i + 1].name) for i in (0, 2))
STARTUP_RUNS = 5

# The load step: spare-based scaling against a fixed pool of 2 (its p99 explodes).
SCALING_CONTENDERS = (prefork_spare(2, 48, 2, 6), prefork_wsgi(2))

# How workers share the port: wake one (the default), wake all, SO_REUSEPORT.
LISTENERS = ("exclusive", "poll", "reuseport")

WORKLOADS = (
    Workload("a", "tiny", "tiny HTTP answer, one connection per request",
             "tiny", "http", 50, f"prefork sync {TIMES}2",
             HTTP_CONTENDERS + tuple(prefork("sync", 2, listener) for listener in LISTENERS[1:])),
    Workload("b", "cpu", "CPU-bound handler (~1 ms of Python per request)",
             "cpu", "http", 50, f"prefork sync {TIMES}2",
             HTTP_CONTENDERS + (prefork("threading", 2, "static"),),
             turns=(prefork("sync", 2).name, prefork("threading", 2).name)),
    Workload("c", "slow", "slow handler (50 ms sleep), 200 concurrent clients",
             "slow", "http", 200, f"prefork threading {TIMES}2",
             (stdlib("threading"), prefork("threading", 2), prefork("threading", 2, "static"),
              gunicorn(2, threads=100)),
             turns=(prefork("threading", 2).name, prefork("threading", 2, "static").name)),
    Workload("d", "udp", "UDP request/response (16-byte datagrams)",
             "udp", "udp", 50, f"prefork UDP {TIMES}2",
             (stdlib("udp"), *(prefork("udp", n) for n in POOL_SIZES))),
    Workload("e", "echo", "long-lived TCP connections, 16-byte line echo",
             "echo", "echo", 50, f"prefork threading {TIMES}2",
             (stdlib("threading"), *(prefork("threading", n) for n in POOL_SIZES),
              prefork("threading", 2, "static")),
             turns=(prefork("threading", 2).name, prefork("threading", 2, "static").name)),
    Workload("i", "mixed", "mixed: 90% quick I/O-bound requests (2 ms sleep), 10% CPU-bound "
             "(5 ms of Python), 100 clients", "mixed", "http", 100, f"prefork sync {TIMES}2",
             (prefork("sync", 2), prefork("threading", 2), prefork("threading", 2, "static"))),
    Workload("f", "herd", "tiny HTTP answer, 2 clients: 8 mostly idle workers share the port",
             "tiny", "http", 2, f"prefork sync {TIMES}8",
             tuple(prefork("sync", 8, listener) for listener in LISTENERS)),
    Workload("g", "wsgi", "the same hello-world WSGI app: the prefork command against gunicorn",
             "tiny", "http", 50, WSGI_PAIRS[0][1], WSGI_CONTENDERS,
             pairs=WSGI_PAIRS, startup_runs=STARTUP_RUNS),
    Workload("h", "scaling", "a load step, 1 \u2192 40 \u2192 1 slow clients (50 ms sleep): "
             "spare-based scaling against a fixed pool",
             "slow", "http", 40, SCALING_CONTENDERS[1].name, SCALING_CONTENDERS, step=True),
)


def _normal(text):
    return text.lower().replace(TIMES, "x")


def select(only):
    """[(workload, [contenders])] kept by the --only filters.

    A filter naming a workload (its letter or name) keeps that workload; any
    other filter keeps the contenders whose name contains it (e.g. "gunicorn",
    "sync x2").  Filters of one kind combine with "or", the two kinds with "and".
    """
    only = [_normal(o) for o in only]
    workload_filters = [o for o in only if any(o in (w.key, w.name) for w in WORKLOADS)]
    name_filters = [o for o in only if o not in workload_filters]
    chosen = []
    for workload in WORKLOADS:
        if workload_filters and not {workload.key, workload.name} & set(workload_filters):
            continue
        contenders = [c for c in workload.contenders
                      if not name_filters or any(f in _normal(c.name) for f in name_filters)]
        if contenders:
            chosen.append((workload, contenders))
    return chosen
