"""The lab hosts' WSGI application, copied into each host's directory as
cluster_app.py and served there by the prefork command (cluster_app:application).

Every answer names the host ($CLUSTERLAB_HOST) and the code's VERSION, which
hosts.Host.deploy() rewrites in the copy: new code on disk, as a deployment
writes it, for a restart, a reload (HUP) or an upgrade (USR2) to load.
GET /?sleep=S sleeps S seconds (at most 1) before answering, so that requests
are in flight when a host is stopped, reloaded or killed.
"""

import os
import time
from urllib.parse import parse_qs

VERSION = "v1"
HOST = os.environ.get("CLUSTERLAB_HOST", "?")


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    delay = float(query.get("sleep", ["0"])[0])
    if delay > 0:
        time.sleep(min(delay, 1.0))
    body = f"host={HOST} version={VERSION} pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def parse(body):
    """(host, version) of an answer's body; None unless it is one of ours."""
    words = dict(word.split("=", 1) for word in body.split() if "=" in word)
    if body.endswith("\n") and {"host", "version", "pid"} <= words.keys():
        return words["host"], words["version"]
    return None
