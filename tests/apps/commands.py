"""Request handlers for the prefork tests: one command per request.

  echo WORDS   -> "<pid> <generation> WORDS"
  sleep S      -> sleeps S seconds, then "<pid> slept"
  hang         -> never answers
  grow MIB     -> keeps MIB more MiB alive in this worker, then "<pid> grew"
  version      -> "<pid> <VERSION>" (a reload test rewrites VERSION in a copy of this file)

sleep and hang first append "<pid> <command> <time.monotonic()>" to the file named by
$PREFORK_TEST_STARTED_FILE, if set: a test waits on it to know its request reached a handler.
"""

import os
import time

import prefork

VERSION = "v1"
_hoard = []


def _started(name):
    """Tell a waiting test that this request reached its handler."""
    path = os.environ.get("PREFORK_TEST_STARTED_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {name} {time.monotonic()}\n")


def run_command(server, line):
    name, _, arg = line.strip().partition(" ")
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
    return f"{os.getpid()} unknown command {name!r}"


class StreamCommands(prefork.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().decode()
        self.wfile.write((run_command(self.server, line) + "\n").encode())


class DatagramCommands(prefork.DatagramRequestHandler):
    def handle(self):
        line = self.rfile.read().decode()
        self.wfile.write((run_command(self.server, line) + "\n").encode())
