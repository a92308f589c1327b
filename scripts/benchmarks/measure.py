"""One contender under one workload: start it, load it, measure it, stop it."""

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import clients
from .processes import ServerDied, ServerProcess
from .work import REQUEST

MEMORY_LEAD = 0.3   # memory is read this long before the load ends, under load
POLL_EVERY = 0.002  # seconds between connection attempts while a server starts
STARTUP_TIMEOUT = 30.0


@dataclass
class Settings:
    python: str
    logs: Path          # one server log per run
    warmup: float       # seconds of load before the window
    duration: float     # seconds of the measured window
    generators: dict    # protocol -> load generator (wrk or built-in)
    step_phases: tuple = ()   # the load step's (seconds, clients), step.phases_for()
    repeat: int = 1           # runs of each row, in turns (--repeat)


def free_port(protocol):
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sleep_until(deadline):
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("\u00d7", "x")).strip("-")


def _server(contender, workload, settings, log_name):
    """(address, ServerProcess not yet started) for a run of contender on a free port."""
    address = ("127.0.0.1", free_port(workload.protocol))
    env = dict(os.environ, BENCH_HANDLER=workload.handler)
    argv = contender.argv(settings.python, workload.handler, address[1])
    log_path = settings.logs / f"{workload.key}-{slug(contender.name)}{log_name}.log"
    return address, ServerProcess(argv, env, log_path, contender.stop_signal)


def measure(contender, workload, settings):
    """The row of figures of `contender` under `workload`."""
    address, server = _server(contender, workload, settings, "")
    generator = settings.generators[workload.protocol]
    with server:
        server.wait_ready(lambda: clients.one_request(workload.protocol, address))
        load = generator.start(workload, address, settings.warmup, settings.duration)
        try:
            cpu_rate, busy_rate, memory = _observe(server, load, contender.pooled)
            result = load.finish()
        finally:
            load.abort()
    return _row(contender, workload, result, cpu_rate, busy_rate, memory)


def startups(contenders, workload, settings):
    """{name: [ms, ...]}: workload.startup_runs times each contender's start-up,
    from just before the exec to its first good HTTP answer.  The contenders
    take turns (a, b, a, b, ...), so a busy moment of the machine hits them alike."""
    times = {c.name: [] for c in contenders}
    for _ in range(workload.startup_runs):
        for contender in contenders:
            address, server = _server(contender, workload, settings, "-startup")
            started = time.monotonic()
            with server:
                _first_response(server, address, started + STARTUP_TIMEOUT)
                times[contender.name].append((time.monotonic() - started) * 1e3)
    return times


def _first_response(server, address, deadline):
    """Connect and GET until an answer comes (a refused connection is retried
    POLL_EVERY later; a connected one waits for its answer)."""
    while True:
        if server.proc.poll() is not None:
            raise ServerDied(f"exited with {server.proc.returncode}\n{server.log_tail()}")
        timeout = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection(address, timeout) as sock:
                sock.sendall(REQUEST)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            if clients.http_ok(reply):
                return
            error = f"wrong HTTP reply: {reply[:60]!r}"
        except OSError as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            raise ServerDied(f"no answer after {STARTUP_TIMEOUT:g} s: {error}\n"
                             f"{server.log_tail()}")
        time.sleep(POLL_EVERY)


def _busy_cores():
    """CPU seconds the whole machine has spent running processes (not idle, not IRQs)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


def _observe(server, load, pooled):
    """Over the window: the server tree's CPU and the machine's, per second; memory."""
    sleep_until(load.count_from)
    cpu0, busy0, t0 = server.cpu_seconds(), _busy_cores(), time.monotonic()
    sleep_until(load.until - MEMORY_LEAD)
    memory = server.memory(pooled)
    sleep_until(load.until)
    cpu1, busy1, t1 = server.cpu_seconds(), _busy_cores(), time.monotonic()
    return (cpu1 - cpu0) / (t1 - t0), (busy1 - busy0) / (t1 - t0), memory


def _row(contender, workload, result, cpu_rate, busy_rate, memory):
    rps = result.rps
    return {
        "workload": workload.key, "contender": contender.name, "family": contender.family,
        "workers": contender.workers,
        "requests": result.requests, "seconds": round(result.seconds, 3),
        "rps": rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "errors": sum(result.errors.values()), "error_kinds": result.errors,
        "server_cores": cpu_rate, "cpu_us": cpu_rate / rps * 1e6 if rps else None,
        "loadgen_cores": result.cores,
        # anyone else on the machine: a busy neighbour makes the figures noisy
        "other_cores": max(0.0, busy_rate - cpu_rate - result.cores),
        **memory,
    }
