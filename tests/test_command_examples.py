"""The examples the README runs through the prefork command, run for real:
each app of examples/, started as the README starts it (on a free port),
answers as its docstring says, and stops cleanly on TERM."""

import os
import re
import socket
import xmlrpc.client

import pytest

import prefork

from support import CLIENT_TIMEOUT, ROOT, connect, http_get, recv_all, start_prefork, terminate

EXAMPLES = os.path.join(ROOT, "examples")

pytestmark = pytest.mark.timeout(30)


# -- helpers -----------------------------------------------------------------------

def serve(spawn, *args, workers=2):
    """start_prefork() in examples/, as the README runs it: (process, its first address)."""
    process, addresses = start_prefork(spawn, *args, workers=workers, cwd=EXAMPLES)
    return process, addresses[0]


# -- the examples --------------------------------------------------------------------

def test_echo_handler(spawn):
    process, address = serve(spawn, "echo_handler:Echo")
    with connect(address) as client:
        client.sendall(b"one\ntwo\n")
        client.shutdown(socket.SHUT_WR)
        answer = recv_all(client).decode()
    assert re.fullmatch(r"worker (\d): one\nworker \1: two\n", answer), answer
    terminate(process)


def test_http_handler_with_threading_workers(spawn):
    process, address = serve(spawn, "-k", "threading", "hello_handler:HelloHandler")
    status, body = http_get(address, "/hi")
    assert status == 200
    assert re.fullmatch(r"Hello from prefork worker \d \(pid \d+, generation 1\): /hi\n", body)
    terminate(process)


def test_udp_handler(spawn):
    process, address = serve(spawn, "-b", "udp://127.0.0.1:0", "udp_upper:Upper")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(CLIENT_TIMEOUT)
        client.sendto(b"quiet words", address)
        assert client.recv(100) == b"QUIET WORDS"
    terminate(process)


def test_xmlrpc_server_class(spawn):
    process, (host, port) = serve(spawn, "calculator_xmlrpc:Calculator")
    with xmlrpc.client.ServerProxy(f"http://{host}:{port}/") as proxy:
        assert (proxy.add(2, 3), proxy.multiply(4, 5)) == (5, 20)
    terminate(process)


@pytest.mark.parametrize("args, greeting", [
    (["hello_wsgi:app"], "Hello"),
    (["--threads", "8", "hello_wsgi:create_app('Bonjour')"], "Bonjour"),
], ids=["app", "factory-threads"])
def test_wsgi_app(spawn, args, greeting):
    process, address = serve(spawn, *args)
    status, body = http_get(address, "/path")
    assert (status, body) == (200, f"{greeting} from prefork/{prefork.__version__}: /path\n")
    terminate(process)


def test_demo_config_file(spawn):
    """The demo's config file: its settings apply (the command line's -b and -w
    win over its bind and workers), its when_ready hook prints the banner."""
    process, address = serve(spawn, "-c", "demo_config.py", "hello_handler:HelloHandler")
    banner = [line for line in process.lines if "serving http://" in line]  # (before boot)
    banner = banner[0] if banner else process.readline_until(lambda l: "serving http://" in l)
    assert f"2 workers serving http://{address[0]}:{address[1]}/" in banner
    assert http_get(address)[0] == 200
    terminate(process)

