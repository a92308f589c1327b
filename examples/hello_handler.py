"""The demo's request handler, in a module of its own so that a reload runs new code.

./scripts/demo serves it: `prefork -c demo_config.py hello_handler:HelloHandler`, run
in examples/.  On HUP the master starts a new generation of workers, and each
imports this module afresh (unless --preload): edit GREETING, `kill -HUP` the
master, and the new generation answers with the new text.
"""

import os
from http.server import BaseHTTPRequestHandler

GREETING = "Hello from prefork"


class HelloHandler(BaseHTTPRequestHandler):
    """GET anything: one line naming the worker that answered and its generation."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        worker = self.server.current_worker
        body = (f"{GREETING} worker {worker.number} "
                f"(pid {os.getpid()}, generation {worker.generation}): {self.path}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # a load test would otherwise flood the terminal
