"""A socketserver contender's process, on 127.0.0.1.

    python -m benchmarks.server FRAMEWORK KIND HANDLER PORT [WORKERS [VARIANT]]

FRAMEWORK: stdlib (the real standard-library socketserver) or prefork.
KIND: sync, threading, forking or udp.  HANDLER: see handlers.build().
WORKERS, VARIANT: prefork only; VARIANT is one of VARIANTS.
TERM stops the server (prefork: its graceful stop).
"""

import importlib
import signal
import sys

from .handlers import build

MODULES = {"stdlib": "socketserver", "prefork": "prefork"}
SERVER_CLASSES = {"sync": "TCPServer", "threading": "ThreadingTCPServer",
                  "forking": "ForkingTCPServer", "udp": "UDPServer"}
BACKLOG = 1024   # every contender's listen backlog (gunicorn: --backlog)

# Variants of prefork's settings.  How workers share the port: one listener,
# waking one worker per connection (the default), or waking them all, or one
# SO_REUSEPORT listener each; and threading workers without adaptive_threads,
# which take whatever comes, however busy their core.
VARIANTS = {
    "exclusive": {},
    "poll": {"exclusive_accept": False},
    "reuseport": {"reuse_port": True},
    "static": {"adaptive_threads": False},
}


def server_class(socketserver, kind, workers, variant="exclusive"):
    """The module's predefined server class -- behind PreforkMixIn if workers."""
    base = getattr(socketserver, SERVER_CLASSES[kind])
    attrs = {"request_queue_size": BACKLOG, "allow_reuse_address": True}
    if workers:
        attrs["workers"] = workers
        attrs.update(VARIANTS[variant])
        return type("Prefork" + base.__name__, (socketserver.PreforkMixIn, base), attrs)
    return type(base.__name__, (base,), attrs)


def main(argv):
    framework, kind, handler, port = argv[:4]
    workers = int(argv[4]) if len(argv) > 4 else 0
    variant = argv[5] if len(argv) > 5 else "exclusive"
    socketserver = importlib.import_module(MODULES[framework])
    if framework == "stdlib":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cls = server_class(socketserver, kind, workers, variant)
    with cls(("127.0.0.1", int(port)), build(socketserver, handler)) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
