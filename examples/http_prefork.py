"""A pre-forking HTTP server: an http.server handler on prefork (./scripts/demo runs it).

    python examples/http_prefork.py [--host 127.0.0.1] [--port 8000] [--workers 4]

Each answer names the worker that served it.  The handler lives in
hello_handler.py beside this script, so that a reload runs its edited code.
The master is driven by signals, like gunicorn: see SIGNALS below (and --help).
"""

import argparse
import os
import sys

import prefork

import hello_handler  # beside this script: a module of its own, re-imported on HUP

SIGNALS = """\
signals to the master (kill -SIGNAL PID; the pid is printed at start):
  TERM        graceful stop: the workers finish their requests first
  INT, QUIT   quick stop (INT is Ctrl-C)
  HUP         reload: a new generation of workers, which re-import
              hello_handler.py (edit it, then HUP); no request is lost
  TTIN, TTOU  one worker more, one fewer
  USR1        reopen log files
"""


class HTTPServer(prefork.PreforkMixIn, prefork.ThreadingMixIn, prefork.TCPServer):
    """http.server's HTTPServer, pre-forked: threads within each worker."""

    allow_reuse_address = True
    daemon_threads = True
    max_threads = 64

    def when_ready(self):
        host, port = self.server_address[:2]
        pid = os.getpid()
        handler = os.path.relpath(hello_handler.__file__)
        print(f"""
prefork demo: {self.workers} workers serving http://{host}:{port}/  (master pid {pid})

Try, from another terminal:
  curl http://{host}:{port}/hello                 # which worker answered
  kill -HUP  {pid}     # reload: a new generation of workers, no request lost;
                       #   edit GREETING in {handler} first: they run the new code
  kill -TTIN {pid}     # one worker more      kill -TTOU {pid}  # one fewer
  kill -USR1 {pid}     # reopen log files
  ps -o pid,ppid,args --ppid {pid} -p {pid}   # the titles
  kill -TERM {pid}     # graceful stop (or Ctrl-C here: quick stop)
""", flush=True)


def parse_args():
    parser = argparse.ArgumentParser(
        description="A pre-forking HTTP server on prefork: a master process binds the port\n"
                    "and forks workers, and each answer names the worker that served it.\n"
                    "The handler is hello_handler.py, beside this script.",
        epilog=SIGNALS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8000,
                        help="the TCP port to listen on; 0 picks a free one "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, metavar="N",
                        help="how many worker processes to pre-fork (default: %(default)s); "
                             "TTIN/TTOU change it while running")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        server = HTTPServer((args.host, args.port), hello_handler.HelloHandler,
                            workers=args.workers)
    except OSError as error:
        sys.exit(f"http_prefork: cannot listen on {args.host}:{args.port}: {error.strerror}")
    with server:
        server.serve_forever()
    sys.exit(server.exit_status)  # 0: a clean stop; 1: workers had to be killed


if __name__ == "__main__":
    main()
