"""The demo's configuration file (./scripts/demo runs `prefork -c demo_config.py
hello_handler:HelloHandler` here): settings, as on the command line, and a hook.

Any setting of `prefork --help` can be assigned (its long name with
underscores); options on the command line and in $PREFORK_CMD_ARGS win over
this file.  HUP reads it again: edit `workers`, `kill -HUP` the master.
"""

import os

bind = ["127.0.0.1:8000"]
workers = 4
worker_class = "threading"
max_threads = 64
graceful_timeout = 10


def when_ready(server):
    """Hooks take the server first, as gunicorn's: say what to try."""
    host, port = server.server_address[:2]
    pid = os.getpid()
    print(f"""
prefork demo: {server.workers} workers serving http://{host}:{port}/  (master pid {pid})

Try, from another terminal:
  curl http://{host}:{port}/hello                 # which worker answered
  kill -HUP  {pid}     # reload: a new generation of workers, no request lost;
                       #   edit GREETING in examples/hello_handler.py first
  kill -TTIN {pid}     # one worker more      kill -TTOU {pid}  # one fewer
  kill -USR1 {pid}     # reopen log files
  ps -o pid,ppid,args --ppid {pid} -p {pid}   # the titles
  kill -TERM {pid}     # graceful stop (or Ctrl-C here: quick stop)
""", flush=True)
