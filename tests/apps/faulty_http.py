"""An http.server handler for tests/test_prefork_settings_and_limits.py: a
handler that reads a request body, and one that fails on request.

BodyHTTP (HTTP/1.0, one request per connection):
  POST /            -> reads the Content-Length body, answers "<pid> got N bytes"
  GET /raise/NAME   -> raises the built-in exception NAME (ValueError,
                       ConnectionResetError, BrokenPipeError, ...) from the handler
  GET /anything     -> "<pid> /anything"
"""

import builtins
import http.server
import os


class BodyHTTP(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(f"got {len(body)} bytes")

    def do_GET(self):
        if self.path.startswith("/raise/"):
            name = self.path[len("/raise/"):]
            raise getattr(builtins, name)(f"{name} raised on purpose")
        self.answer(self.path)

    def answer(self, text):
        body = f"{os.getpid()} {text}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # the test reads the process's output for tracebacks and the prefork log
