"""A configurable prefork server for the tests, run as a real process.

    python tests/apps/serve.py --family tcp|udp|unix|unixgram --mixin sync|threading|forking
        [--address PATH] [--set NAME=VALUE ...] [--handler MODULE:CLASS] [--path DIR]
        [--stdlib-http] [--boot-error TEXT] [--log-file PATH] [--control PATH]

Prints "READY <address>" once listening with the workers forked, "CLOSED <seconds>"
when server_close() returns, and exits with server.exit_status (prefork.ExitStatus: 0 after a clean stop, 1 if
workers had to be SIGKILLed, 3 on WorkerBootError).
"""

import argparse
import ast
import ctypes
import http.server
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prefork  # noqa: E402

FAMILIES = {"tcp": prefork.TCPServer, "udp": prefork.UDPServer,
            "unix": prefork.UnixStreamServer, "unixgram": prefork.UnixDatagramServer}
MIXINS = {"sync": (), "threading": (prefork.ThreadingMixIn,), "forking": (prefork.ForkingMixIn,)}


class PidHTTPHandler(http.server.BaseHTTPRequestHandler):
    """For the stdlib ThreadingHTTPServer case: GET answers the worker's pid."""

    def do_GET(self):
        body = f"{os.getpid()} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HOOKS = ("on_starting", "pre_fork", "post_fork", "post_worker_init", "worker_stopping",
         "worker_exit", "child_exit", "on_reload", "nworkers_changed", "on_exit")


def tracing(cls, name):
    """cls's hook `name`, printing one line whenever it is called."""
    original = getattr(cls, name)

    def hook(self, *args):
        sys.stdout.write(" ".join(["HOOK", name, str(os.getpid()), *map(str, args)]) + "\n")
        sys.stdout.flush()
        return original(self, *args)
    return hook


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", default="tcp", choices=FAMILIES)
    parser.add_argument("--mixin", default="sync", choices=MIXINS)
    parser.add_argument("--address")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--handler")
    parser.add_argument("--path", help="put DIR first on sys.path (for --handler)")
    parser.add_argument("--stdlib-http", action="store_true",
                        help="PreforkMixIn over http.server.ThreadingHTTPServer")
    parser.add_argument("--boot-error", help="post_fork raises RuntimeError(TEXT)")
    parser.add_argument("--log-file")
    parser.add_argument("--control", help="a Unix socket; 'shutdown' calls server.shutdown()")
    parser.add_argument("--trace-hooks", action="store_true",
                        help='each hook prints "HOOK <name> <pid> <arguments>"')
    return parser.parse_args()


def build_class(args):
    if args.stdlib_http:
        bases = (prefork.PreforkMixIn, http.server.ThreadingHTTPServer)
    else:
        bases = (prefork.PreforkMixIn, *MIXINS[args.mixin], FAMILIES[args.family])
    boot_error = args.boot_error

    class TestServer(*bases):
        def when_ready(self):
            # One write (print() writes the newline apart): workers forked just
            # before may be logging to the same pipe.
            sys.stdout.write(f"READY {prefork.listeners.format_address(self.server_address)}\n")
            sys.stdout.flush()

        def post_fork(self, worker):
            if boot_error:
                raise RuntimeError(boot_error)

    if args.trace_hooks:
        for name in HOOKS:
            setattr(TestServer, name, tracing(TestServer, name))

    return TestServer


def load_handler(args):
    if args.stdlib_http:
        return PidHTTPHandler
    default = "commands:DatagramCommands" if "udp" in args.family or "gram" in args.family \
        else "commands:StreamCommands"
    module_name, _, class_name = (args.handler or default).partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def serve_control(server, path):
    """A thread that calls server.shutdown() when asked, and says how long it took."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            started = time.monotonic()
            server.shutdown()
            conn.sendall(f"done {time.monotonic() - started:.3f}\n".encode())
    threading.Thread(target=run, daemon=True).start()


def die_with_parent():
    """If the test run itself is killed, take this server down too (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main():
    die_with_parent()
    args = parse_args()
    if args.path:
        sys.path.insert(0, args.path)
    if args.log_file:
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter(prefork.logfiles.LOG_FORMAT))
        logging.getLogger("prefork").addHandler(handler)
        logging.getLogger("prefork").setLevel(logging.INFO)
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = ast.literal_eval(value)
    address = args.address if args.family in ("unix", "unixgram") else ("127.0.0.1", 0)
    server = build_class(args)(address, load_handler(args), **settings)
    if args.control:
        serve_control(server, args.control)
    try:
        server.serve_forever(poll_interval=0.1)
    except prefork.WorkerBootError as error:
        print("BOOT ERROR", error, flush=True)
        server.server_close()
        sys.exit(server.exit_status)
    started = time.monotonic()
    server.server_close()
    sys.stdout.write(f"CLOSED {time.monotonic() - started:.3f}\n")  # one write, as READY
    sys.stdout.flush()
    sys.exit(server.exit_status)


if __name__ == "__main__":
    main()
