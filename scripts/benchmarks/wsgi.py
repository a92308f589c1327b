"""The WSGI app of gunicorn and of the prefork command (the wsgi workload):
the same body, the same work per request.

BENCH_HANDLER (tiny, cpu, slow) picks the work, as the socketserver handlers do.
"""

import os

from .work import BODY, work_for

_work = work_for(os.environ.get("BENCH_HANDLER", "tiny"))
_length = str(len(BODY))


def app(environ, start_response):
    if _work is not None:
        _work()
    start_response("200 OK", [("Content-Length", _length)])
    return [BODY]
