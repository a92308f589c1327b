"""A pre-forking HTTP server: the stdlib's http.server handler on prefork.

    python examples/http_prefork.py [--host 127.0.0.1] [--port 8000] [--workers 4]

Each answer names the worker that served it.  The master is driven by
signals, like gunicorn: TERM stops gracefully, INT/QUIT quickly, HUP reloads
(a new generation of workers), TTIN/TTOU add/remove a worker, USR1 reopens
log files.
"""

import argparse
import os
import sys
from http.server import BaseHTTPRequestHandler

import prefork


class HelloHandler(BaseHTTPRequestHandler):
    """GET anything: a short page saying which worker answered."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        worker = self.server.current_worker
        body = (f"Hello from prefork worker {worker.number} "
                f"(pid {os.getpid()}, generation {worker.generation}): {self.path}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # a load test would otherwise flood the terminal


class HTTPServer(prefork.PreforkMixIn, prefork.ThreadingMixIn, prefork.TCPServer):
    """http.server's HTTPServer, pre-forked: threads within each worker."""

    allow_reuse_address = True
    daemon_threads = True
    max_threads = 64

    def when_ready(self):
        host, port = self.server_address[:2]
        print(f"""
prefork demo: {self.workers} workers serving http://{host}:{port}/  (master pid {os.getpid()})

Try, from another terminal:
  curl http://{host}:{port}/hello                 # which worker answered
  kill -HUP  {os.getpid()}     # reload: a new generation of workers, no request lost
  kill -TTIN {os.getpid()}     # one worker more      kill -TTOU {os.getpid()}  # one fewer
  kill -USR1 {os.getpid()}     # reopen log files
  ps -o pid,ppid,args --ppid {os.getpid()} -p {os.getpid()}   # the titles
  kill -TERM {os.getpid()}     # graceful stop (or Ctrl-C here: quick stop)
""", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    try:
        server = HTTPServer((args.host, args.port), HelloHandler, workers=args.workers)
    except OSError as error:
        sys.exit(f"http_prefork: cannot listen on {args.host}:{args.port}: {error.strerror}")
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
