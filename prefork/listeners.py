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
        server.socket.setblocking(False)


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
