"""The clients of the three protocols.

one_request() makes one blocking request (the readiness probe).  drive() runs
many non-blocking clients on one selector, each making one request after
another, and tallies what completes inside the counting window:

    http   a new connection per request: connect, send, read to EOF, check
    echo   one long-lived connection: send a 16-byte line, read it back
    udp    one socket: send a numbered datagram, wait for that reply
"""

import errno
import selectors
import socket
from array import array
from collections import Counter
from time import monotonic

from .work import BODY, DATAGRAM_SIZE, LINE, REQUEST

TCP_TIMEOUT = 2.0    # seconds, as wrk's default
UDP_TIMEOUT = 1.0
CHECK_EVERY = 0.1    # seconds between looks for timed-out requests


def http_ok(reply):
    """A 200 with the body.  HTTP/1.0 too: wsgiref (the prefork command's WSGI
    server) answers in HTTP/1.0, and closes, as every contender does."""
    return reply.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")) and reply.endswith(BODY)


def one_request(protocol, address, timeout=2.0):
    """One request, blocking; OSError unless the right answer comes back."""
    if protocol == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.send(LINE)
            if sock.recv(DATAGRAM_SIZE * 4) != LINE:
                raise OSError("wrong UDP reply")
        return
    with socket.create_connection(address, timeout) as sock:
        if protocol == "http":
            sock.sendall(REQUEST)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            if not http_ok(reply):
                raise OSError(f"wrong HTTP reply: {reply[:60]!r}")
        else:
            sock.sendall(LINE)
            reply = b""
            while len(reply) < len(LINE) and (chunk := sock.recv(4096)):
                reply += chunk
            if reply != LINE:
                raise OSError(f"wrong echo reply: {reply!r}")


class Tally:
    """What one process's clients achieved from count_from on."""

    def __init__(self, count_from):
        self.count_from = count_from
        self.ok = 0
        self.errors = Counter()
        self.latencies = array("d")   # seconds, one per counted request

    def success(self, began, now):
        if now >= self.count_from:
            self.ok += 1
            self.latencies.append(now - began)

    def failure(self, kind, now):
        if now >= self.count_from:
            self.errors[kind] += 1


def _error_name(error):
    if isinstance(error, int):
        return errno.errorcode.get(error, str(error))
    return errno.errorcode.get(error.errno, type(error).__name__) if error.errno else type(error).__name__


class Client:
    """One request after another.  Subclasses speak a protocol.

    A failed request is recorded and its client restarted by the loop on
    its next turn (never from inside the failure: no recursion, no spin).
    """

    timeout = TCP_TIMEOUT

    def __init__(self, loop, address):
        self.loop = loop
        self.address = address
        self.sock = None
        self.began = None    # when the request in flight began; None: none in flight

    def begin(self, now):
        """Start the next request."""
        raise NotImplementedError

    def on_event(self, now):
        """The socket is ready."""
        raise NotImplementedError

    def succeed(self, now):
        self.loop.tally.success(self.began, now)
        self.begin(now)

    def fail(self, kind, now):
        self.loop.tally.failure(kind, now)
        self.began = None
        self.drop()
        self.loop.failed.append(self)

    def expired(self, now):
        return self.began is not None and now - self.began > self.timeout

    def drop(self):
        """Forget the connection (after a failure, or at the end)."""
        if self.sock is not None:
            self.loop.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None


class StreamClient(Client):
    """A TCP client: non-blocking connect, then request/response."""

    def connect(self, now):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.connected = False
        err = self.sock.connect_ex(self.address)
        self.loop.selector.register(self.sock, selectors.EVENT_WRITE, self)
        if err not in (0, errno.EINPROGRESS):
            self.fail(_error_name(err), now)

    def on_event(self, now):
        try:
            if not self.connected:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return self.fail(_error_name(err), now)
                self.connected = True
                self.loop.selector.modify(self.sock, selectors.EVENT_READ, self)
                return self.send_request()
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            return self.fail(_error_name(error), now)
        self.received(data, now)

    def send_request(self):
        raise NotImplementedError

    def received(self, data, now):
        raise NotImplementedError


class HTTPClient(StreamClient):
    """A new connection per request; the answer ends when the server closes."""

    def begin(self, now):
        self.began = now
        self.reply = b""
        self.drop()
        self.connect(now)

    def send_request(self):
        self.sock.send(REQUEST)  # far smaller than any socket buffer

    def received(self, data, now):
        if data:
            self.reply += data
        elif http_ok(self.reply):
            self.succeed(now)
        else:
            self.fail("bad reply" if self.reply else "closed", now)


class EchoClient(StreamClient):
    """One connection for the whole run, one 16-byte line at a time."""

    def begin(self, now):
        self.began = now
        self.reply = b""
        if self.sock is None:
            return self.connect(now)
        try:
            self.send_request()
        except OSError as error:
            self.fail(_error_name(error), now)

    def send_request(self):
        self.sock.send(LINE)

    def received(self, data, now):
        if not data:
            return self.fail("closed", now)
        self.reply += data
        if len(self.reply) >= len(LINE):
            if self.reply == LINE:
                self.succeed(now)
            else:
                self.fail("bad reply", now)


class UDPClient(Client):
    """Numbered datagrams; a late reply to a timed-out one is ignored."""

    timeout = UDP_TIMEOUT

    def __init__(self, loop, address):
        super().__init__(loop, address)
        self.number = 0

    def begin(self, now):
        if self.sock is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
            self.sock.connect(self.address)
            self.loop.selector.register(self.sock, selectors.EVENT_READ, self)
        self.began = now
        self.number += 1
        self.expected = self.number.to_bytes(DATAGRAM_SIZE, "big")
        try:
            self.sock.send(self.expected)
        except OSError as error:
            self.fail(_error_name(error), now)

    def on_event(self, now):
        try:
            data = self.sock.recv(DATAGRAM_SIZE * 4)
        except BlockingIOError:
            return
        except OSError as error:
            return self.fail(_error_name(error), now)
        if data == self.expected and self.began is not None:
            self.succeed(now)


CLIENTS = {"http": HTTPClient, "echo": EchoClient, "udp": UDPClient}


class _Loop:
    """What the clients of one process share."""

    def __init__(self, tally):
        self.selector = selectors.DefaultSelector()
        self.tally = tally
        self.failed = []   # clients to restart on the next turn
        self.next_check = 0.0

    def turn(self, members, timeout):
        """Wait up to timeout for the clients' sockets, act on what came,
        time out the clients of members that waited too long (every
        CHECK_EVERY), restart the failed ones; return the time now."""
        events = self.selector.select(timeout)
        now = monotonic()
        for key, _ in events:
            if key.fileobj is key.data.sock:  # not dropped earlier this turn
                key.data.on_event(now)
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY
            for client in members:
                if client.expired(now):
                    client.fail("timeout", now)
        failed, self.failed = self.failed, []
        for client in failed:
            client.begin(now)
        return now


def drive(protocol, address, clients, count_from, until):
    """Run `clients` clients until `until` (monotonic); return their Tally."""
    loop = _Loop(Tally(count_from))
    pool = [CLIENTS[protocol](loop, address) for _ in range(clients)]
    now = monotonic()
    for client in pool:
        client.begin(now)
    loop.next_check = now + CHECK_EVERY
    try:
        while now < until:
            now = loop.turn(pool, min(CHECK_EVERY, until - now))
    finally:
        for client in pool:
            client.drop()
        loop.selector.close()
    return loop.tally
