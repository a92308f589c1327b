"""The socketserver documentation's examples in examples/, run for real on
prefork (the prefork command's examples: test_command_examples.py).

Each server runs as its own process on a free port; the matching client runs
as a subprocess and must print what the docs show.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from support import ROOT, sigint_is_ignored

CLIENT_TIMEOUT = 10  # seconds an example client may run

UPPERCASE_EXAMPLES = [
    pytest.param("tcp_uppercase_server.py", "tcp_client.py", "TCP", id="tcp"),
    pytest.param("tcp_uppercase_stream_server.py", "tcp_client.py", "TCP", id="tcp-stream"),
    pytest.param("udp_uppercase_server.py", "udp_client.py", "UDP", id="udp"),
]


def example(name):
    return os.path.join("examples", name)


def start_server(spawn, name, args=("--port", "0"), env=None):
    """Start an example server; return (process, port) once it is bound."""
    server = spawn([sys.executable, example(name), *args], env=env)
    line = server.readline_until(lambda line: line.startswith("serving on "))
    address = line.split()[-1]
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"  # "localhost", the docs' default
    return server, int(port)


def run_client(name, message, port=None, env=None):
    """Run an example client (with --port, unless None); return its output lines."""
    port_args = [] if port is None else ["--port", str(port)]
    args = [sys.executable, example(name), *port_args, *message.split()]
    result = subprocess.run(args, cwd=ROOT, env=dict(os.environ, **(env or {})),
                            capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def check_exchange(server, client, message, port=None, env=None):
    """One client run: the docs' client output, and the docs' server output."""
    assert run_client(client, message, port, env) == [
        f"Sent:     {message}",
        f"Received: {message.upper()}",
    ]
    server.readline_until(lambda line: line == "127.0.0.1 wrote:\n")
    server.readline_until(lambda line: line == f"{message.encode()!r}\n")


@pytest.mark.parametrize("server_name, client_name, protocol", UPPERCASE_EXAMPLES)
def test_uppercase_example(spawn, server_name, client_name, protocol):
    server, port = start_server(spawn, server_name)
    # The two runs shown in the docs: one server serves them both.
    for message in (f"hello world with {protocol}", "python is nice"):
        check_exchange(server, client_name, message, port)
    assert server.popen.poll() is None, "the server keeps serving"


def test_port_from_environment(spawn):
    """PORT in the environment stands in for --port, for server and client."""
    server, port = start_server(spawn, "tcp_uppercase_server.py", args=(),
                                env={"PORT": "0"})
    check_exchange(server, "tcp_client.py", "hello world with TCP", env={"PORT": str(port)})


@pytest.mark.parametrize("server_name", [
    "tcp_uppercase_server.py", "tcp_uppercase_stream_server.py", "udp_uppercase_server.py"])
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_server_stops_on_signal(spawn, server_name, stop_signal):
    """Ctrl-C (the docs' way to stop) and a plain kill both end the server at once."""
    if stop_signal == signal.SIGINT and sigint_is_ignored():
        pytest.skip("SIGINT is ignored in this environment")
    server, _ = start_server(spawn, server_name)
    assert server.stop(stop_signal) == -stop_signal
    if stop_signal == signal.SIGINT:
        assert "KeyboardInterrupt" in server.output()


def test_threaded_example(spawn):
    """Three clients, each answered by its own request thread; then a clean exit."""
    process = spawn([sys.executable, example("threaded_tcp_server.py")])
    assert process.wait() == 0
    output = process.output().splitlines()
    assert output[0].startswith("Server loop running in thread: Thread-")
    loop_thread = output[0].split(": ", 1)[1]
    replies = [re.fullmatch(r"Received: (Thread-\d+[^:]*): Hello World (\d)", line)
               for line in output[1:]]
    assert all(replies) and len(replies) == 3, output
    assert [reply[2] for reply in replies] == ["1", "2", "3"]
    threads = {reply[1] for reply in replies}
    assert len(threads) == 3 and loop_thread not in threads, output
