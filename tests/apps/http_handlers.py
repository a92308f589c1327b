"""Handlers for tests/test_prefork_open_connections.py: connections kept open.

KeepAliveHTTP   an HTTP/1.1 keep-alive http.server handler:
                  GET /       -> "<pid> <generation> <VERSION>"
                  GET /slow   -> sleeps SLOW seconds, then "<pid> <generation> slept"
                  POST /      -> reads the Content-Length body, "<pid> <generation> got N bytes"
                (a reload test rewrites VERSION in a copy of this file)
LineEcho        not HTTP: echoes lines for as long as the client keeps the
                connection open -- it never hears a stop.
StoppableLineEcho  the same, with stop_connection(): a stop ends its read (EOF).
StreamingHTTP   HTTP/1.1 whose GET answers, then keeps reading the connection as a
                stream of its own (as an upgraded connection would) until its own
                stop_connection() ends the read.

GET /slow and POST first append "<pid> <what> <time.monotonic()>" to the file named by
$PREFORK_TEST_STARTED_FILE, if set (as tests/apps/commands.py does): a test waits on it
to know that its request reached the handler (support.started_requests).
"""

import http.server
import os
import socket
import time

import prefork

VERSION = "v1"
SLOW = 2.0  # seconds GET /slow takes


def _started(what):
    path = os.environ.get("PREFORK_TEST_STARTED_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {what} {time.monotonic()}\n")


class KeepAliveHTTP(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the connection stays open between requests

    def do_GET(self):
        if self.path == "/slow":
            _started("slow")
            time.sleep(SLOW)
            self.answer("slept")
        else:
            self.answer(VERSION)

    def do_POST(self):
        _started("post")
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.answer(f"got {len(body)} bytes")

    def answer(self, text):
        generation = self.server.current_worker.generation
        body = f"{os.getpid()} {generation} {text}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # the test reads the process's output for the prefork log


class LineEcho(prefork.StreamRequestHandler):
    """Echoes each line until the client closes: ignores any stop."""

    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


class StoppableLineEcho(LineEcho):
    """LineEcho that hears the stop: prefork calls stop_connection() when the
    worker's stop begins (perhaps in a signal handler: short, no lock)."""

    def stop_connection(self):
        try:
            self.connection.shutdown(socket.SHUT_RD)  # the blocked read returns EOF
        except OSError:
            pass  # the client has gone already


class StreamingHTTP(http.server.BaseHTTPRequestHandler):
    """An HTTP handler that turns its connection into a stream after answering:
    its own stop_connection() must still be called on a stop."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
        self.rfile.readline()  # the stream, until stop_connection()
        self.close_connection = True

    def stop_connection(self):
        self.connection.shutdown(socket.SHUT_RD)

    def log_message(self, format, *args):
        pass
