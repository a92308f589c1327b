"""Request handlers: one instance per request, created by the server.

Subclass BaseRequestHandler and override handle(); StreamRequestHandler and
DatagramRequestHandler add file-like ``rfile`` / ``wfile`` attributes so that
handle() can read and write the request like a file.
"""

import socket
from io import BufferedIOBase, BytesIO


class BaseRequestHandler:
    """Base class for request handler classes.

    A new instance is made for each request; the constructor sets the instance
    variables request, client_address and server, then calls setup(),
    handle() and finish().  finish() runs even if handle() raises, but not if
    setup() does.

    For stream services, self.request is a socket; for datagram services it
    is a pair (data, socket), and replies go to self.client_address.
    """

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self):
        pass

    def handle(self):
        pass

    def finish(self):
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets.

    rbufsize: read buffer size (-1, the default, buffers; 0 would not).
    wbufsize: write buffer size; 0 (the default) sends every write at once,
    so no flush is needed.  timeout: a socket timeout for the connection
    (None: none).  disable_nagle_algorithm: set TCP_NODELAY.
    """

    rbufsize = -1
    wbufsize = 0

    timeout = None
    # TCP_NODELAY is worth it with a buffered wfile (wbufsize != 0), which
    # sends whole responses rather than many small writes.
    disable_nagle_algorithm = False

    def setup(self):
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile("wb", self.wbufsize)

    def finish(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass  # the client has gone: nothing left to deliver
        self.wfile.close()
        self.rfile.close()


class _SocketWriter(BufferedIOBase):
    """An unbuffered, writable BufferedIOBase over a socket.

    write() sends every byte before it returns, so there is nothing to flush.
    """

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    def write(self, b):
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self):
        return self._sock.fileno()


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets.

    rfile holds the datagram; whatever handle() writes to wfile is sent back
    to the client as one datagram by finish().
    """

    def setup(self):
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self):
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
