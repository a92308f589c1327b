"""A framework server driven from the prefork master's loop, never blocking it.

The master answers two kinds of small clients beside its workers: the
control socket (control.py) and the health listener (health.py).  Each is a
server of prefork's own framework with an ordinary request handler; a
Channel drives it from the master's serve loop (ServeLoop.add_reader) so
that no client can make the master wait:

- it accepts without waiting, and keeps each client until its whole request
  has come -- peeked, not read -- and only then runs the handler on it, whose
  reads then find everything there;
- a client that sends nothing is turned away after client_deadline, one that
  sends more than max_request bytes at once, and one more than max_clients;
- the handler answers with one non-blocking send (its business).

The server class provides:

    request_complete(data)   whether the bytes peeked so far make a whole request
    refuse(conn, why)        turn a client away: a short answer, without waiting
    verify_request(conn, addr)   as socketserver's; False: it has refused the client
    max_request, client_deadline, max_clients   class variables, the bounds above
    name, request_noun       class variables, for messages ("Control socket", "command")
"""

import logging
import socket
from time import monotonic

log = logging.getLogger("prefork")


class Channel:
    """server (see the module's docstring) driven by loop, the master's
    ServeLoop, until close().  listen=False: made without watching the
    listener yet (listen() starts)."""

    def __init__(self, server, loop, listen=True):
        self.server = server
        self.loop = loop
        self.waiting = {}  # fd -> (socket, address, deadline)
        self.listening = False
        if listen:
            self.listen()

    def listen(self):
        if not self.listening:
            self.listening = True
            self.loop.add_reader(self.server.fileno(), self.accept)

    def stop_accepting(self):
        """Accept no more clients, and close this process's copy of the
        listener (another may hold it: a new master's, after USR2); the
        clients accepted already are still answered, as their requests come."""
        if self.listening:
            self.listening = False
            self.loop.remove_reader(self.server.fileno())
        self.server.server_close()

    def accept(self):
        server = self.server
        while True:
            try:
                conn, address = server.socket.accept()
            except BlockingIOError:
                return
            except OSError as error:
                log.warning("%s: accept failed: %s", server.name, error)
                return
            if len(self.waiting) >= server.max_clients:
                self.serve_ready()  # (their requests may be there, their turn not yet come)
            if not server.verify_request(conn, address):
                continue  # (it has turned the client away)
            if len(self.waiting) >= server.max_clients:
                server.refuse(conn, "too many clients")
                continue
            conn.setblocking(False)
            self.waiting[conn.fileno()] = (conn, address, monotonic() + server.client_deadline)
            self.loop.add_reader(conn.fileno(), lambda fd=conn.fileno(): self.readable(fd))

    def readable(self, fd):
        """Run the handler once a whole request (or the end, or too much) is there."""
        conn, address, _ = self.waiting[fd]
        limit = self.server.max_request
        try:
            data = conn.recv(limit + 1, socket.MSG_PEEK)
        except BlockingIOError:
            return  # nothing yet
        except OSError:
            data = b""
        if data and len(data) <= limit and not self.server.request_complete(data):
            return  # more to come
        self.forget(fd)
        if not data:
            conn.close()  # went away without a request
            return
        conn.settimeout(self.server.client_deadline)  # (it is there: reading cannot wait)
        self.server.process_request(conn, address)

    def serve_ready(self):
        for fd in list(self.waiting):
            self.readable(fd)

    def sockets(self):
        """Its open sockets: a forked worker closes its copies."""
        return [self.server.socket] + [conn for conn, _, _ in self.waiting.values()]

    def expire(self):
        """Turn away the clients that did not send a request in time (each master turn)."""
        now = monotonic()
        for fd, (conn, _, deadline) in list(self.waiting.items()):
            if now >= deadline:
                self.forget(fd)
                self.server.refuse(conn, f"no {self.server.request_noun} within "
                                         f"{self.server.client_deadline}s")

    def forget(self, fd):
        self.waiting.pop(fd)
        self.loop.remove_reader(fd)

    def close(self):
        """Answer the clients whose whole request is there (closing them
        unanswered would reset them), close the others, then the server
        (the listener: the server's business)."""
        self.serve_ready()
        for fd in list(self.waiting):
            conn, _, _ = self.waiting[fd]
            self.forget(fd)
            conn.close()
        self.stop_accepting()


def send_now(conn, data):
    """Send data at once, or not at all: a client that does not read is not
    waited for (an answer is a few hundred bytes: the socket's buffer takes it)."""
    try:
        conn.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass
