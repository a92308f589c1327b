"""The health listener: whether a load balancer should send this host requests.

health_bind (--health-bind HOST:PORT) makes the master answer HTTP on a port
of its own, from its loop -- a TCPServer and a request handler driven by a
channel.Channel, as the control socket is, so that no client can block it.
Any request (GET, HEAD, OPTIONS..., any path) gets, with Connection: close:

    200 OK                    ready      the first generation of workers serves
    503 Service Unavailable   booting    before that
    503 Service Unavailable   draining   from the moment a graceful stop begins
                                         (with drain_delay, still serving meanwhile)

A reload keeps answering ready: the old generation serves until the new one
does.  A binary upgrade (USR2) never takes the host out of rotation: the new
master answers on the listener it inherited only once its workers serve (the
old master answers for the host until then), and the old master stops
accepting -- closes its copy -- once it is told to stop, still answering
ready to the checks it had accepted.  At exit, a master answers the checks
whose request is there rather than reset them.

Off (health_bind None), nothing of this is made.
"""

import logging
import re

from .channel import send_now
from .handlers import BaseRequestHandler
from .server import TCPServer

log = logging.getLogger("prefork")

MAX_REQUEST = 4096      # bytes of a request's head
CLIENT_DEADLINE = 2.0   # seconds a client may take to send it
MAX_CLIENTS = 256       # waiting at once; more are turned away (a balancer's checks
                        # would fail: room for many more than checks ever need)
BACKLOG = 128
STATUS = {"ready": "200 OK", "booting": "503 Service Unavailable",
          "draining": "503 Service Unavailable"}
REQUEST_LINE = re.compile(rb"([!-~]+) [!-~]+ HTTP/\d\.\d\r?")


def response(status, body, head_only=False):
    """An HTTP/1.0 answer of one line of text, closing the connection."""
    text = (body + "\n").encode()
    head = (f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}"
            "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + text


class HealthHandler(BaseRequestHandler):
    """One request's head (all there already: see channel.py), one answer:
    the master's health (Master.health()), or 400 for what is not HTTP."""

    def handle(self):
        head = self.request.recv(MAX_REQUEST + 1)
        line = REQUEST_LINE.fullmatch(head.split(b"\n", 1)[0])
        if line is None or len(head) > MAX_REQUEST:
            answer = response("400 Bad Request", "bad request")
        else:
            health = self.server.master.health()
            answer = response(STATUS[health], health, head_only=line[1] == b"HEAD")
        send_now(self.request, answer)


class HealthServer(TCPServer):
    """The health listener's server, on a socket bound and listening already
    (opened by the command, or handed over by an old master); driven by a
    channel.Channel from the master's loop, never serve_forever()."""

    name = "Health listener"
    request_noun = "request"
    max_request = MAX_REQUEST
    client_deadline = CLIENT_DEADLINE
    max_clients = MAX_CLIENTS

    def __init__(self, sock, master):
        self.master = master
        super().__init__(sock.getsockname(), HealthHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock

    def request_complete(self, data):
        """The head up to its blank line -- or a first line that is no HTTP
        request line at all (answered 400 at once)."""
        first, newline, _ = data.partition(b"\n")
        if not newline:
            return False
        if REQUEST_LINE.fullmatch(first) is None:
            return True
        return b"\n\r\n" in data or b"\n\n" in data

    def verify_request(self, request, client_address):
        return True  # (a balancer's, anyone's: it tells nothing but the state)

    def refuse(self, conn, why):
        send_now(conn, response("503 Service Unavailable", why))
        conn.close()

    def handle_error(self, request, client_address):
        log.exception("Health listener: error answering a client")
