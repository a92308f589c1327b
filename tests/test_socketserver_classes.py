"""The socketserver framework's server classes: every server class over its
family -- addresses, handle_request/serve_forever, timeouts, verify_request,
socket options, bind errors -- with the standard library's semantics (CPython
3.13 ``socketserver``), and the drop-in promise (same names, defaults, signatures;
prefork never imports the stdlib's module).
"""

import ast
import errno
import inspect
import os
import select
import socket
import socketserver as stdlib_socketserver  # only to compare: prefork must never import it
import struct
import threading
import time

import pytest

import prefork
from support import (
    ALL_SERVERS, BASE_SERVERS, DATAGRAM_SERVERS, FORK_WARNING, INET_SERVERS, ROOT, class_id,
    echo_handler, exchange, is_stream, recv_all, recv_reply, serving)

pytestmark = pytest.mark.filterwarnings(FORK_WARNING)


def listen_queue(sock):
    """(pending connections, backlog) of a listening TCP socket, from the
    kernel's sock_diag netlink interface (what `ss -lt` shows as Recv-Q/Send-Q)."""
    sock_diag_by_family, nlm_f_request_dump, nlmsg_done, nlmsg_error = 20, 0x301, 3, 2
    tcp_listen = 10
    inode = os.fstat(sock.fileno()).st_ino
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << tcp_listen)
    request += bytes(48)  # struct inet_diag_sockid: match all
    header = struct.pack("=IHHII", 16 + len(request), sock_diag_by_family, nlm_f_request_dump, 1, 0)
    try:
        diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    except OSError as exc:
        pytest.skip(f"no sock_diag netlink here: {exc}")
    with diag:
        diag.sendall(header + request)
        while True:
            data = diag.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                assert kind not in (nlmsg_done, nlmsg_error), "listener not found"
                # struct inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid, inode
                _, pending, backlog, _, msg_inode = struct.unpack_from("=5I", data, offset + 16 + 52)
                if msg_inode == inode:
                    return pending, backlog
                offset += (length + 3) & ~3


def open_fds():
    return len(os.listdir("/proc/self/fd"))


# -- every class, every family ---------------------------------------------------

@pytest.mark.parametrize("kind", ["file", "base"])
@pytest.mark.parametrize("server_class", ALL_SERVERS, ids=class_id)
def test_echo_round_trip(lab, server_class, kind):
    server = lab.server(server_class, echo_handler(server_class, kind))
    with serving(server, poll_interval=0.05):
        for n in range(2):
            payload = b"hello %d\n" % n
            assert exchange(lab.client(server), payload) == b"echo:" + payload


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_server_address_is_the_bound_address(lab, server_class):
    requested = lab.address(server_class)
    server = server_class(requested, echo_handler(server_class))
    lab.servers.append(server)
    assert server.server_address == server.socket.getsockname()
    if server.address_family == socket.AF_INET:
        assert server.server_address[0] == "127.0.0.1"
        assert server.server_address[1] != 0  # port 0 became the real port
    else:
        assert server.server_address == requested
    assert server.fileno() == server.socket.fileno() >= 0
    assert select.select([server], [], [], 0) == ([], [], [])  # usable by selectors


@pytest.mark.parametrize("server_class", ALL_SERVERS, ids=class_id)
def test_context_manager_closes_the_socket(lab, server_class):
    server = lab.server(server_class)
    with server as entered:
        assert entered is server
        assert server.socket.fileno() >= 0
    assert server.socket.fileno() == -1


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_handle_request_handles_exactly_one(lab, server_class):
    server = lab.server(server_class)
    clients = [lab.client(server) for _ in range(2)]
    for client in clients:
        client.sendall(b"one of two\n")
    server.handle_request()
    assert len(server.handled) == 1
    server.handle_request()
    assert len(server.handled) == 2
    for client in clients:
        assert recv_reply(client) == b"echo:one of two\n"


@pytest.mark.parametrize("set_timeout", [
    pytest.param(lambda server: setattr(server, "timeout", 0.2), id="server.timeout"),
    pytest.param(lambda server: server.socket.settimeout(0.2), id="socket.settimeout"),
])
@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_handle_request_times_out(lab, server_class, set_timeout):
    server = lab.server(server_class)
    timeouts = []
    server.handle_timeout = lambda: timeouts.append(time.monotonic())
    set_timeout(server)
    started = time.monotonic()
    server.handle_request()
    assert len(timeouts) == 1
    assert 0.15 < timeouts[0] - started < 2
    assert server.handled == []


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_serve_forever_calls_service_actions_every_turn(lab, server_class):
    server = lab.server(server_class)
    turns = []
    enough = threading.Event()

    def service_actions():
        turns.append(None)
        if len(turns) >= 3:
            enough.set()

    server.service_actions = service_actions
    with serving(server, poll_interval=0.01):
        assert enough.wait(5)  # three idle turns
        seen = len(turns)
        assert exchange(lab.client(server), b"x\n") == b"echo:x\n"
        enough.clear()
        assert enough.wait(5) and len(turns) > seen


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_verify_request_false_shuts_the_request_down_unhandled(lab, server_class):
    server = lab.server(server_class)
    verified, shut_down = [], []

    def verify_request(request, client_address):
        verified.append(client_address)
        return False

    def shutdown_request(request, default=server.shutdown_request):
        shut_down.append(request)
        default(request)

    server.verify_request, server.shutdown_request = verify_request, shutdown_request
    client = lab.client(server)
    if not is_stream(server):
        client.sendall(b"rejected\n")  # (unread data would turn a Unix stream's EOF into a reset)
    server.handle_request()
    assert len(verified) == 1 and len(shut_down) == 1
    assert server.handled == []
    if is_stream(server):
        assert recv_all(client) == b""  # EOF: the connection was closed
        assert shut_down[0].fileno() == -1
    else:
        assert shut_down[0] == (b"rejected\n", server.socket)


@pytest.mark.parametrize("enabled", [False, True])
@pytest.mark.parametrize("attribute, option", [
    ("allow_reuse_address", socket.SO_REUSEADDR),
    ("allow_reuse_port", socket.SO_REUSEPORT),
])
@pytest.mark.parametrize("server_class", INET_SERVERS, ids=class_id)
def test_reuse_attributes_set_socket_options(lab, server_class, attribute, option, enabled):
    server = lab.server(server_class, **{attribute: enabled})
    assert bool(server.socket.getsockopt(socket.SOL_SOCKET, option)) is enabled


@pytest.mark.parametrize("server_class", [prefork.UnixStreamServer, prefork.UnixDatagramServer],
                         ids=class_id)
def test_allow_reuse_port_is_skipped_on_unix_sockets(lab, server_class):
    """Linux 6.12.9+ refuses SO_REUSEPORT outside AF_INET/AF_INET6 (CPython gh-128916)."""
    server = lab.server(server_class, allow_reuse_port=True)
    client = lab.client(server)
    client.sendall(b"reused\n")
    server.handle_request()
    assert recv_reply(client) == b"echo:reused\n"


@pytest.mark.parametrize("queue_size", [None, 17])
def test_request_queue_size_is_the_listen_backlog(lab, queue_size):
    attrs = {} if queue_size is None else {"request_queue_size": queue_size}
    server = lab.server(prefork.TCPServer, **attrs)
    backlog = queue_size or 5
    assert listen_queue(server.socket) == (0, backlog)
    lab.client(server)
    assert select.select([server], [], [], 5)[0]
    assert listen_queue(server.socket) == (1, backlog)  # the connection waits in that queue


@pytest.mark.parametrize("max_packet_size", [None, 16])
@pytest.mark.parametrize("server_class", DATAGRAM_SERVERS, ids=class_id)
def test_max_packet_size_bounds_the_datagram(lab, server_class, max_packet_size):
    attrs = {} if max_packet_size is None else {"max_packet_size": max_packet_size}
    server = lab.server(server_class, **attrs)
    limit = max_packet_size or 8192
    payload = bytes(range(256)) * 40  # 10240 bytes
    lab.client(server).sendall(payload)
    server.handle_request()
    assert server.handled == [payload[:limit]]


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_bind_failure_raises_and_closes_the_socket(lab, server_class):
    occupant = socket.socket(server_class.address_family, server_class.socket_type)
    lab.clients.append(occupant)
    occupant.bind(lab.address(server_class))
    made = []

    class Recorded(server_class):
        def server_bind(self):
            made.append(self)
            super().server_bind()

    before = open_fds()
    with pytest.raises(OSError) as failure:
        Recorded(occupant.getsockname(), echo_handler(server_class))
    assert failure.value.errno == errno.EADDRINUSE
    assert made[0].socket.fileno() == -1
    assert open_fds() == before


@pytest.mark.parametrize("server_class", BASE_SERVERS, ids=class_id)
def test_bind_and_activate_false_leaves_the_socket_unbound(lab, server_class):
    server = lab.server(server_class, bind_and_activate=False)
    requested = server.server_address
    assert server.socket.getsockname() in ("", ("0.0.0.0", 0))
    server.server_bind()
    assert server.server_address == server.socket.getsockname()
    if server.address_family == socket.AF_INET:
        assert server.server_address != requested  # the real port
    if is_stream(server):
        with pytest.raises(ConnectionRefusedError):  # bound, not listening yet
            lab.client(server)
    server.server_activate()
    client = lab.client(server)
    client.sendall(b"late\n")
    server.handle_request()
    assert recv_reply(client) == b"echo:late\n"


# -- the drop-in promise ---------------------------------------------------------

def public_attributes(cls):
    return sorted(name for name in dir(cls) if not name.startswith("_") or name == "__init__")


def test_every_stdlib_name_is_exported():
    assert set(stdlib_socketserver.__all__) <= set(prefork.__all__)
    for name in stdlib_socketserver.__all__:
        assert hasattr(prefork, name), name


DEFAULTS = {
    "BaseServer": ["timeout"],
    "TCPServer": ["timeout", "request_queue_size", "allow_reuse_address",
                  "allow_reuse_port", "socket_type", "address_family"],
    "UDPServer": ["allow_reuse_address", "allow_reuse_port", "max_packet_size",
                  "socket_type", "address_family"],
    "UnixStreamServer": ["address_family", "socket_type", "request_queue_size"],
    "UnixDatagramServer": ["address_family", "socket_type", "max_packet_size"],
    "ForkingMixIn": ["timeout", "max_children", "block_on_close", "active_children"],
    "ThreadingMixIn": ["daemon_threads", "block_on_close"],
    "StreamRequestHandler": ["rbufsize", "wbufsize", "timeout", "disable_nagle_algorithm"],
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_class_attribute_defaults_match_stdlib(name):
    theirs = getattr(stdlib_socketserver, name)
    for attribute in DEFAULTS[name]:
        if not hasattr(theirs, attribute):
            continue  # newer than this Python (allow_reuse_port is 3.11+)
        expected = getattr(theirs, attribute)
        assert getattr(getattr(prefork, name), attribute) == expected, attribute


@pytest.mark.parametrize("name", stdlib_socketserver.__all__)
def test_class_matches_stdlib(name):
    """Same bases (by name), same public attributes and method signatures."""
    ours, theirs = getattr(prefork, name), getattr(stdlib_socketserver, name)
    assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__]
    for attribute in public_attributes(theirs):
        assert hasattr(ours, attribute), attribute
        expected = getattr(theirs, attribute)
        if callable(expected):
            assert inspect.signature(getattr(ours, attribute)) == inspect.signature(expected), attribute
        else:
            assert getattr(ours, attribute) == expected, attribute


def imports_socketserver(node):
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "socketserver" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] == "socketserver"
    if isinstance(node, ast.Call):  # __import__("socketserver"), importlib.import_module(...)
        function = node.func.attr if isinstance(node.func, ast.Attribute) else \
            getattr(node.func, "id", None)
        return function in ("__import__", "import_module") and any(
            isinstance(arg, ast.Constant) and arg.value == "socketserver" for arg in node.args)
    return False


def test_prefork_never_imports_stdlib_socketserver():
    package = os.path.join(ROOT, "prefork")
    sources = [os.path.join(folder, name)
               for folder, _, names in os.walk(package) for name in names
               if name.endswith(".py")]
    assert os.path.join(package, "server.py") in sources
    offenders = []
    for path in sources:
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
        offenders += [f"{path}:{node.lineno}" for node in ast.walk(tree)
                      if imports_socketserver(node)]
    assert offenders == []
