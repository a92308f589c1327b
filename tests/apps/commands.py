"""Request handlers for the prefork tests: one command per request.

  echo WORDS   -> "<pid> <generation> WORDS"
  sleep S      -> sleeps S seconds, then "<pid> slept"
  hang         -> never answers
  grow MIB     -> keeps MIB more MiB alive in this worker, then "<pid> grew"
  version      -> "<pid> <VERSION>" (a reload test rewrites VERSION in a copy of this file)
  burn S       -> runs Python (a busy loop) for S seconds of this thread's CPU time,
                  then "<pid> burned <thread name>"
  peak         -> "<pid> <N>": the most requests in flight at once in this worker
                  since the last peak (peak itself not counted), and starts counting anew

Every command but peak counts as in flight while it runs (a counter per process,
under a lock), for peak.

sleep, hang and burn first append "<pid> <command> <time.monotonic()>" to the file
named by $PREFORK_TEST_STARTED_FILE, if set: a test waits on it to know its request
reached a handler.
"""

import os
import threading
import time

import prefork

VERSION = "v1"
_hoard = []

_in_flight_lock = threading.Lock()
_in_flight = 0  # commands running now in this process
_peak = 0       # the most at once since the last peak command


def _started(name):
    """Tell a waiting test that this request reached its handler."""
    path = os.environ.get("PREFORK_TEST_STARTED_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {name} {time.monotonic()}\n")


def run_command(server, line):
    global _in_flight, _peak
    name, _, arg = line.strip().partition(" ")
    with _in_flight_lock:
        if name == "peak":
            peak, _peak = _peak, _in_flight
            return f"{os.getpid()} {peak}"
        _in_flight += 1
        _peak = max(_peak, _in_flight)
    try:
        return _run(server, name, arg)
    finally:
        with _in_flight_lock:
            _in_flight -= 1


def _run(server, name, arg):
    worker = server.current_worker  # None in the master
    generation = worker.generation if worker else 0
    if name == "echo":
        return f"{os.getpid()} {generation} {arg}"
    if name == "sleep":
        _started(name)
        time.sleep(float(arg))
        return f"{os.getpid()} slept"
    if name == "hang":
        _started(name)
        while True:
            time.sleep(3600)
    if name == "grow":
        _hoard.append(bytearray(int(arg) << 20))
        return f"{os.getpid()} grew"
    if name == "version":
        return f"{os.getpid()} {VERSION}"
    if name == "burn":
        _started(name)
        started = time.thread_time()
        while time.thread_time() - started < float(arg):
            pass
        return f"{os.getpid()} burned {threading.current_thread().name}"
    return f"{os.getpid()} unknown command {name!r}"


class StreamCommands(prefork.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().decode()
        self.wfile.write((run_command(self.server, line) + "\n").encode())


class DatagramCommands(prefork.DatagramRequestHandler):
    def handle(self):
        line = self.rfile.read().decode()
        self.wfile.write((run_command(self.server, line) + "\n").encode())
