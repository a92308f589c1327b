"""The standard library's XML-RPC server, pre-forked, as a real process for the tests.

    python tests/apps/xmlrpc_serve.py [--set NAME=VALUE ...]

class Server(prefork.PreforkMixIn, xmlrpc.server.SimpleXMLRPCServer), with the
stdlib's SimpleXMLRPCRequestHandler speaking HTTP/1.1 (keep-alive).  Functions:
add(a, b), and where() -> [pid, generation].  Prints "READY <host>:<port>" once
the workers are forked, and exits with server.exit_status, as serve.py does.
"""

import argparse
import ast
import os
import sys
import xmlrpc.server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prefork  # noqa: E402
from serve import die_with_parent  # noqa: E402


class KeepAliveXMLRPCHandler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"


class Server(prefork.PreforkMixIn, xmlrpc.server.SimpleXMLRPCServer):
    def when_ready(self):
        sys.stdout.write(f"READY {prefork.listeners.format_address(self.server_address)}\n")
        sys.stdout.flush()


def main():
    die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    settings = {}
    for item in parser.parse_args().set:
        name, _, value = item.partition("=")
        settings[name] = ast.literal_eval(value)
    server = Server(("127.0.0.1", 0), KeepAliveXMLRPCHandler, logRequests=False, **settings)
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(
        lambda: [os.getpid(), server.current_worker.generation], "where")
    with server:
        server.serve_forever(poll_interval=0.1)
    sys.exit(server.exit_status)


if __name__ == "__main__":
    main()
