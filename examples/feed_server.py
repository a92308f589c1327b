"""A subscription feed: a line protocol whose connections stay open, ended promptly
when their worker stops -- on TERM, and for the old generation on a reload (HUP).

    python examples/feed_server.py [--host 127.0.0.1] [--port 8100] [--workers 2]

A client connects and sends one line, "subscribe TOPIC"; the server then sends it
a line every half second, "TOPIC 3: worker 1, generation 1, pid 1234", until the
client sends any line (or closes).  Try it with `nc 127.0.0.1 8100`.

Such a handler owns its connection: it stays in handle() for as long as the client
does, so a graceful stop or a reload must reach it, or it would hold its worker for
the whole graceful_timeout (and be SIGKILLed).  prefork tells it: in a worker,
``server.stopping`` is set the moment that worker begins to stop (TERM to the
master, the old generation on HUP, TTOU, recycling), and it has a fileno().  The
handler select()s on its connection and on ``server.stopping`` together; when the
stop comes it sends "bye: server restarting" and returns, and its client sees that
line, then EOF -- and reconnects, after a HUP to the new generation.  (A handler
may instead define ``stop_connection(self)``, which prefork calls when the stop
begins: see prefork/connections.py.)
"""

import argparse
import os
import select
import sys

import prefork

INTERVAL = 0.5   # seconds between two lines of a feed
GOODBYE = "bye: server restarting"

SIGNALS = """\
signals to the master (kill -SIGNAL PID; the pid is printed at start):
  TERM        graceful stop: every feed ends at once with "bye: server restarting"
  HUP         reload: a new generation of workers; the old one says bye to its
              subscribers, who reconnect to the new one
  TTIN, TTOU  one worker more, one fewer (TTOU ends the feeds of the one that leaves)
  INT, QUIT   quick stop: connections are cut without a goodbye
"""


class FeedHandler(prefork.StreamRequestHandler):
    """One subscriber: "subscribe TOPIC", then a line every INTERVAL seconds."""

    # Unbuffered reads: select() on the socket then sees every byte not yet read.
    rbufsize = 0

    def handle(self):
        if not self.wait_for_client(timeout=10):
            return
        command, _, topic = self.rfile.readline(200).decode(errors="replace").strip().partition(" ")
        if command != "subscribe" or not topic:
            self.send("error: say 'subscribe TOPIC'")
            return
        worker = self.server.current_worker
        self.send(f"subscribed to {topic}")
        count = 0
        while self.wait_for_client(timeout=INTERVAL) is None:
            count += 1
            self.send(f"{topic} {count}: worker {worker.number}, "
                      f"generation {worker.generation}, pid {os.getpid()}")
        # The client sent a line or closed: the feed ends quietly.

    def wait_for_client(self, timeout):
        """Wait until the client sends something (True), timeout passes (None),
        or this worker begins to stop (False, after the goodbye line)."""
        stopping = self.server.stopping
        ready, _, _ = select.select([self.connection, stopping], [], [], timeout)
        if stopping in ready:  # (once set, it stays readable)
            self.send(GOODBYE)
            return False
        return True if ready else None

    def send(self, line):
        self.wfile.write(line.encode() + b"\n")


class FeedServer(prefork.PreforkMixIn, prefork.ThreadingMixIn, prefork.TCPServer):
    """Pre-forked workers, a thread per subscriber in each."""

    allow_reuse_address = True
    daemon_threads = True
    max_threads = 500              # subscribers per worker; at the bound, another worker takes them
    inline_quick_requests = False  # no request is quick here: each subscriber gets its own thread
    # The handler is defined in this script: a reload (HUP) starts new workers
    # running the same code.  To reload edited code, put it in a module of its
    # own (as the demo's hello_handler.py is).
    preload_app = True

    def when_ready(self):
        host, port = self.server_address[:2]
        print(f"feed_server: serving on {host}:{port} (master pid {os.getpid()})", flush=True)


def parse_args():
    parser = argparse.ArgumentParser(
        description="A pre-forked subscription feed: send 'subscribe TOPIC', get a line\n"
                    "every half second; a stop or a reload ends each feed with a goodbye.",
        epilog=SIGNALS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8100,
                        help="the TCP port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        server = FeedServer((args.host, args.port), FeedHandler, workers=args.workers)
    except OSError as error:
        sys.exit(f"feed_server: cannot listen on {args.host}:{args.port}: {error.strerror}")
    with server:
        server.serve_forever()
    sys.exit(server.exit_status)


if __name__ == "__main__":
    main()
