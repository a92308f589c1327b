"""Listening sockets as prefork shares them between processes."""

import errno
import os
import socket
import stat

from .server import BaseServer


def default_backlog(wanted=2048):
    """A production listen backlog: `wanted`, bounded by the kernel's somaxconn.

    The stdlib's 5 is far too small for several workers: under 8 concurrent
    clients, SYNs overflow the queue and clients stall on retransmits.
    """
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return min(wanted, int(f.read()))
    except (OSError, ValueError):
        return wanted


def format_address(address):
    """'127.0.0.1:8000', '[::1]:8000' or 'unix:/path' for logs and titles."""
    if isinstance(address, (str, bytes)):
        return "unix:" + (address.decode() if isinstance(address, bytes) else address)
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def share_listener(server):
    """Make server.socket safe to share between processes.

    When another process takes the request first, accept() or recvfrom() must
    raise EAGAIN ("no request this turn") instead of blocking the loop.
    prefork's own servers already do so (a non-blocking stream listener,
    recvfrom with MSG_DONTWAIT, which leaves replies on a blocking socket);
    a server of the standard library's socketserver needs a non-blocking socket.
    """
    if not isinstance(server, BaseServer):
        for listener in server.listeners:
            listener.setblocking(False)


def reuse_port_listener(server):
    """A new listener of this worker's own, bound with SO_REUSEPORT.

    The kernel then spreads connections across the workers' queues; the price
    is that connections queued on a worker that dies are reset.
    """
    listener = socket.socket(server.socket.family, server.socket.type)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(server.server_address)
        if server.socket.type == socket.SOCK_STREAM:
            listener.listen(server.request_queue_size)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def remove_stale_unix_socket(path, socket_type):
    """Remove the socket file at path if nothing listens on it any more (left
    by a master that was SIGKILLed), as gunicorn does, and return True (else
    False); raise
    OSError(EADDRINUSE) with a clear message if a server does listen on it.
    Anything that is not a socket file is left alone, for bind() to refuse."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, socket_type) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # nobody there: a stale file
        except OSError:
            return False  # cannot tell (permissions...): let bind() say what it says
        else:
            raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
    os.unlink(path)
    return True


# -- bind specs, as gunicorn writes them ---------------------------------------

DEFAULT_PORT = 8000


class Bind:
    """A parsed bind spec: family, type and address -- or fd, an inherited
    descriptor's number (fd://N).  str() gives the spec back."""

    def __init__(self, spec, family=None, type=None, address=None, fd=None):
        self.spec = spec
        self.family = family
        self.type = type
        self.address = address
        self.fd = fd

    @property
    def stream(self):
        return self.type == socket.SOCK_STREAM

    def __str__(self):
        return self.spec

    def __eq__(self, other):
        return isinstance(other, Bind) and (self.family, self.type, self.address, self.fd) == (
            other.family, other.type, other.address, other.fd)

    def __hash__(self):
        return hash((self.family, self.type, self.address, self.fd))


def parse_bind(spec):
    """A Bind for one spec: HOST:PORT, :PORT, [IPv6]:PORT, HOST (port 8000),
    unix:PATH, udp://HOST:PORT, unix-dgram:PATH or fd://N.  A spec that is
    none of those raises ValueError saying what was expected."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"bind {spec!r}: expected HOST:PORT, unix:PATH, udp://HOST:PORT, "
                         "unix-dgram:PATH or fd://N")
    text = spec.strip()
    for prefix, kind in (("unix-dgram:", socket.SOCK_DGRAM), ("unix://", socket.SOCK_STREAM),
                         ("unix:", socket.SOCK_STREAM)):
        if text.startswith(prefix):
            path = text[len(prefix):]
            if not path:
                raise ValueError(f"bind {spec!r}: no path after {prefix!r}")
            return Bind(spec, socket.AF_UNIX, kind, path)
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not number.isdigit():
            raise ValueError(f"bind {spec!r}: fd:// needs a descriptor number, e.g. fd://3")
        return Bind(spec, fd=int(number))
    kind = socket.SOCK_STREAM
    for prefix, prefix_kind in (("udp://", socket.SOCK_DGRAM), ("tcp://", socket.SOCK_STREAM)):
        if text.startswith(prefix):
            text, kind = text[len(prefix):], prefix_kind
    host, port = _split_host_port(spec, text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Bind(spec, family, kind, (host, port))


def _split_host_port(spec, text):
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bind {spec!r}: an IPv6 address is written [ADDRESS]:PORT")
        port = rest[1:] if rest else str(DEFAULT_PORT)
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"bind {spec!r}: an IPv6 address is written [ADDRESS]:PORT")
    else:
        host, port = text, str(DEFAULT_PORT)
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bind {spec!r}: the port must be a number from 0 to 65535")
    return host, int(port)


class AdoptedSocket(socket.socket):
    """A socket bound before its server was made -- by the command, by
    systemd or by a master that handed it over.  The server's own
    server_bind() still runs (HTTPServer, for one, reads its address there)
    but its bind() is a no-op.  bound_here: this process bound it, so a Unix
    socket file is ours to remove when it closes (not one inherited)."""

    bound_here = False
    opened_for = None  # the Bind it was opened for

    def bind(self, address):
        pass


def open_listener(bind, backlog):
    """A listening socket for bind (an AdoptedSocket): bound, and listening
    for streams (non-blocking); an inherited descriptor is taken as it is."""
    if bind.fd is not None:
        return _inherit(bind, backlog)
    if bind.family == socket.AF_UNIX:
        remove_stale_unix_socket(bind.address, bind.type)
    sock = socket.socket(bind.family, bind.type)
    try:
        if bind.stream and bind.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(bind.address)
        if bind.stream:
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    adopted = AdoptedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    adopted.bound_here = True
    adopted.opened_for = bind
    return adopted


def _inherit(bind, backlog):
    try:
        if not stat.S_ISSOCK(os.fstat(bind.fd).st_mode):
            raise ValueError(f"bind {bind.spec!r}: descriptor {bind.fd} is not a socket")
    except OSError:
        raise ValueError(f"bind {bind.spec!r}: descriptor {bind.fd} is not open") from None
    sock = inherit(bind.fd, backlog)
    sock.opened_for = bind
    return sock


def inherit(fd, backlog):
    """An AdoptedSocket for an inherited descriptor (fd://N, systemd, an old
    master's): listening, non-blocking for streams.  Its Unix socket file is
    not this process's to remove."""
    sock = AdoptedSocket(fileno=fd)
    if sock.type == socket.SOCK_STREAM:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
        sock.setblocking(False)
    return sock


def matches(bind, sock):
    """Whether an inherited socket serves bind: the same family, type and
    address -- any port of the same host, for a bind to port 0."""
    if (sock.family, sock.type) != (bind.family, bind.type):
        return False
    address = sock.getsockname()
    if bind.family == socket.AF_UNIX:
        return address == bind.address
    host, port = bind.address
    return address[:2] == (host, port) or (port == 0 and address[0] == host)


def close_listener(sock):
    """Close a listener of open_listener(), removing the Unix socket file it bound."""
    address = sock.getsockname()
    sock.close()
    if sock.bound_here and isinstance(address, str) and address:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
