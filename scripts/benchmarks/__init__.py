"""The side-by-side benchmark behind ./scripts/bench.

Each contender is a real server process on 127.0.0.1, started, waited for,
loaded, measured and stopped in turn:

    plan.py       what runs: the contenders and the workloads
    work.py       the bytes and the work of one request, shared by every server
    handlers.py   the socketserver handlers (stdlib's module or prefork's)
    server.py     a socketserver contender's process (python -m benchmarks.server)
    wsgi.py       the WSGI app of gunicorn and of the prefork command
    processes.py  one server process: start, readiness, CPU and memory, stop
    clients.py    the protocols' clients: one request, and non-blocking clients
    loadgen.py    the built-in load generator (several processes)
    wrk.py        wrk, when installed, for the HTTP workloads
    measure.py    one contender under one workload: a row of figures; start-up times
    report.py     Markdown tables, results.json, the acceptance checks
    step.py       the load step (scaling): clients 1 -> 40 -> 1, workers and p99 over time
    plot.py       bench.png, scaling.png
"""
