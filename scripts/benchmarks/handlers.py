"""The contenders' request handlers, written once for any socketserver module.

build(socketserver, name) makes the handler on the module it is given -- the
standard library's or prefork -- so both frameworks run the very same code.
"""

from .work import RESPONSE, work_for


def read_head(sock):
    """Read up to the end of the request head; False if the client left first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        head += chunk
    return True


def build(socketserver, name):
    """The handler class `name` (tiny, cpu, slow, echo, udp) on `socketserver`."""
    if name == "echo":
        return _echo_handler(socketserver)
    if name == "udp":
        return _udp_handler(socketserver)
    return _http_handler(socketserver, work_for(name))


def _http_handler(socketserver, work):
    class HTTPHandler(socketserver.BaseRequestHandler):
        """Read the request head, do the work, send the fixed answer; the server closes."""

        def handle(self):
            if read_head(self.request):
                if work is not None:
                    work()
                self.request.sendall(RESPONSE)

    return HTTPHandler


def _echo_handler(socketserver):
    class EchoHandler(socketserver.StreamRequestHandler):
        """Echo each line until the client closes (the framework's rfile/wfile)."""

        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    return EchoHandler


def _udp_handler(socketserver):
    class UDPEchoHandler(socketserver.BaseRequestHandler):
        """Send each datagram back."""

        def handle(self):
            data, sock = self.request
            sock.sendto(data, self.client_address)

    return UDPEchoHandler
