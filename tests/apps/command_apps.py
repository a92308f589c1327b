"""Applications the prefork command runs in the tests: one of each kind.

Each answers with facts a test checks: the worker's pid and uid, VERSION
(rewritten on disk by reload tests), where it was imported.
"""

import http.server
import os
import socketserver
from xmlrpc.server import SimpleXMLRPCServer

VERSION = "1"
IMPORTED_BY = (os.getpid(), os.getuid())  # the process (and user) that imported this copy


def facts(server=None):
    worker = server.current_worker if server is not None else None
    return (f"version={VERSION} pid={os.getpid()} uid={os.getuid()} gid={os.getgid()} "
            f"imported_by={IMPORTED_BY[0]}/{IMPORTED_BY[1]} "
            f"worker={worker.number if worker else '-'}")


class Echo(socketserver.StreamRequestHandler):
    """A line in; back: "echo LINE facts"."""

    def handle(self):
        line = self.rfile.readline().strip().decode()
        self.wfile.write(f"echo {line} {facts(self.server)}\n".encode())


class Upper(socketserver.DatagramRequestHandler):
    """A datagram in; back: it in upper case, then the facts."""

    def handle(self):
        self.wfile.write(self.rfile.read().upper() + b" " + facts(self.server).encode())


class Hello(http.server.BaseHTTPRequestHandler):
    """GET: 200 with the facts."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello {facts(self.server)}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Calculator(SimpleXMLRPCServer):
    """An xmlrpc server class: add(a, b) and facts()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, logRequests=False, **kwargs)
        self.register_function(lambda a, b: a + b, "add")
        self.register_function(lambda: facts(self), "facts")


def app(environ, start_response):
    """A WSGI application: the facts and SERVER_SOFTWARE."""
    body = f"wsgi {facts()} software={environ['SERVER_SOFTWARE']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def create_app(greeting="hi"):
    """A WSGI application factory: MODULE:create_app('hey')."""
    def greet(environ, start_response):
        body = f"{greeting} {facts()}\n".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return greet


NOT_AN_APP = 42
