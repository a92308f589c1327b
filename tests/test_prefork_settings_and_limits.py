"""Settings and limits: what the pool may grow to, which values are refused,
the files a server finds at its address, and the bounds on memory and on noise.

Process tests run tests/apps/serve.py (the `spawn` fixture stops and reaps it),
answering tests/apps/commands.py ("echo WORDS" -> "<pid> <generation> WORDS",
"grow MIB", "sleep S"), or a tiny server script of their own.

1. max_workers caps TTIN; the scoreboard (2 x max_workers slots) never stops a
   reload at the cap -- not even a storm of HUPs -- and logs nothing in a loop.
2. Every setting's bad values are refused at construction, naming the setting,
   binding nothing; max_threads is a keyword of threading servers only.
3. A Unix socket file: a stale one is removed; a live server's is refused and
   left alone; any other file is left alone.
4. max_worker_memory: the worker checks its own RSS after each request.
5. Clients that reset mid-request are no tracebacks; other handler errors are.
6. A handler defined in __main__: a reload cannot load its code, and says so.
7. A reload whose module has a syntax error names the user's file and line,
   and the old generation keeps serving.

Long (~580 lines): each setting is refused with each kind of bad value, and
each limit is shown on a real process tree, one test per fault.
"""

import collections
import contextlib
import errno
import http.client
import http.server
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import struct
import threading

import psutil
import pytest

import prefork
from support import (
    APPS, CLIENT_TIMEOUT, PYTHON, Load, assert_no_zombies, children,
    echo, live_children, parse_reply, request, start_booted, started_requests,
    stop_server, wait_booted, wait_for, wait_log)

QUICK = ("--set", "graceful_timeout=5", "--set", "boot_timeout=5")
LOG_PREFIX = re.compile(r"^\[[^]]*\] \[\d+\] \[[A-Z]+\] ")


def log_lines(output):
    """The prefork log lines of a process's output, without their time/pid/level prefix."""
    return [LOG_PREFIX.sub("", line) for line in output.splitlines() if LOG_PREFIX.match(line)]


def assert_nothing_logged_in_a_loop(output):
    """No log line (numbers aside) comes back more often than once per worker
    forked: the old scoreboard logged "No free scoreboard slot" ten times a second."""
    lines = log_lines(output)
    forked = sum(line.startswith("Booted worker") for line in lines)
    counts = collections.Counter(re.sub(r"\d+", "N", line) for line in lines)
    line, count = counts.most_common(1)[0]
    assert count <= forked, f"logged {count} times ({forked} workers forked): {line}"
    assert "No free scoreboard slot" not in output


def workers_if(pids, count):
    """pids if there are count of them, else None (for wait_for)."""
    return pids if len(pids) == count else None


def stop(process):
    """SIGTERM (graceful stop): (its exit code, everything it printed) -- the
    output is checked first, the exit code (0) last."""
    code = process.stop(signal.SIGTERM)
    return code, process.output()


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def load_app(name):
    """A module of tests/apps, imported from its file (the apps are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(APPS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- 1. max_workers: TTIN stops there, reloads still complete -----------------------------

REFUSED = "TTIN ignored: already at max_workers (4)"


@pytest.mark.timeout(20)
def test_ttin_stops_at_max_workers_and_a_reload_at_the_cap_completes(spawn):
    process, address = start_booted(spawn, "--set", "max_workers=4", *QUICK, workers=2)
    # One signal at a time: signals sent back to back may merge into one.
    for expected in ["Number of workers: 2 -> 3", "Number of workers: 3 -> 4",
                     REFUSED, REFUSED, REFUSED]:
        os.kill(process.pid, signal.SIGTTIN)
        wait_log(process, expected)
    wait_booted(process, 4)
    first = wait_for(lambda: workers_if(live_children(process.pid), 4), message="4 workers")

    os.kill(process.pid, signal.SIGHUP)
    wait_log(process, "Reloaded: generation 2 serving")
    # Only generation 2 is left: the 4 old workers are reaped, 4 new ones serve.
    wait_for(lambda: len(now := children(process.pid)) == 4 and not set(now) & first,
             message="generation 1 to be gone")
    replies = [echo(address, f"after the reload {i}") for i in range(8)]
    assert {reply.generation for reply in replies} == {2}, replies
    assert {reply.pid for reply in replies} <= set(children(process.pid)), replies
    assert_no_zombies(process.pid)
    code, output = stop(process)
    assert output.count("TTIN ignored") == 3, output  # one line per refused TTIN
    assert output.count(REFUSED) == 3, output
    # 2 x max_workers slots: both generations fit side by side.
    assert "Scoreboard full" not in output, output
    assert_nothing_logged_in_a_loop(output)
    assert code == 0, output


@pytest.mark.timeout(20)
def test_a_hup_storm_at_max_workers_ends_with_one_generation_of_max_workers(spawn):
    # Each new generation re-imports slow_reload (0.4 s): every HUP comes while
    # the generation before is still booting -- 3 generations want slots at once.
    process, address = start_booted(
        spawn, "--handler", "slow_reload:SlowReloadCommands", "--set", "max_workers=4",
        *QUICK, workers=4, env={"PREFORK_TEST_RELOAD_DELAY": "0.4"})
    with Load(address, threads=1, pace=0.01) as load:
        load.wait_for_replies(5, "the load to flow")
        for generation in (2, 3, 4):
            os.kill(process.pid, signal.SIGHUP)
            wait_log(process, f"Reloading: starting generation {generation}")
        wait_log(process, "Reloaded: generation 4 serving")
        wait_for(lambda: len(children(process.pid)) == 4,
                 message="the retired generations to be gone")
        load.wait_for_replies(10, "replies after the storm")

    replies = [echo(address, f"after the storm {i}") for i in range(8)]
    assert {reply.generation for reply in replies} == {4}, replies
    assert len(live_children(process.pid)) == 4
    assert load.failures == [], load.failures  # the listener kept every connection
    assert_no_zombies(process.pid)
    code, output = stop(process)
    assert "Reload failed" not in output, output
    # The slots ran short (8 = 2 x max_workers, taken by generations 1 and 2):
    # old workers were stopped before their replacements were ready, each once.
    full = [line for line in log_lines(output) if line.startswith("Scoreboard full")]
    assert full and all(line.startswith("Scoreboard full (8 slots)") for line in full), output
    assert len(full) <= 3 * 4 + 3, full  # at most one per worker stopped early, per HUP
    assert_nothing_logged_in_a_loop(output)
    assert code == 0, output


@pytest.mark.timeout(10)
def test_max_workers_defaults_to_four_times_workers_and_at_least_16():
    for workers, expected in [(1, 16), (4, 16), (5, 20)]:
        with prefork.PreforkTCPServer(("127.0.0.1", 0), prefork.StreamRequestHandler,
                                      workers=workers) as server:
            assert server.max_workers == expected, (workers, server.max_workers)
    with pytest.raises(ValueError, match=r"workers \(5\) must not exceed max_workers \(4\)"):
        prefork.PreforkTCPServer(("127.0.0.1", 0), prefork.StreamRequestHandler,
                                 workers=5, max_workers=4)


# -- 2. bad settings: refused at construction --------------------------------------------

NAN = float("nan")

# Every server setting of prefork.config.SETTINGS, with values it must refuse
# (the command's own settings: tests/test_command_settings.py).
INVALID = {
    "workers": [0, -1, True, 2.0, "2", None],
    "max_workers": [0, -1, True, 4.0, "4"],
    "graceful_timeout": [-1, -0.5, NAN, "30", True, None],
    "boot_timeout": [0, -1, NAN, "30", None],
    "liveness_timeout": [0, -1, NAN, "30", None],
    "request_timeout": [0, -1, NAN, "1", False],
    "max_requests": [-1, 1.5, True, "10", None],
    "max_requests_jitter": [-1, 0.5, True, None],
    "max_worker_memory": [0, -1, 1.5, True, "1G"],
    "max_worker_age": [0, -1, NAN, "1h"],
    "boot_attempts": [0, -1, True, 2.0, None],
    "preload_app": [1, 0, "yes", None],
    "exclusive_accept": [1, "no", None],
    "reuse_port": [1, "yes", None],
    "proc_name": ["", 5, b"prefork", None],
    "request_queue_size": [0, -1, True, "128", None],
    "block_on_close": [1, "true", None],
    "reuse_threads": [0, "false", None],
    "inline_quick_requests": [1, "yes", None],
    "adaptive_threads": [0, "no", None],
    "max_threads": [0, -1, True, 1.5, "8"],
    "min_workers": [0, -1, True, 1.5, "2"],
    "spare_min": [0, -1, True, 1.5, "2"],
    "spare_max": [0, -1, True, 1.5, "2"],
    "control_socket": ["", 5, b"/tmp/x.ctl"],
    "health_bind": ["", 8001, "unix:/tmp/x", "udp://127.0.0.1:1", "fd://3", "[::1", ("h", 1)],
    "drain_delay": [-1, NAN, "5", True],
    "user": ["no-such-user-pf", "", 5],
    "group": ["no-such-group-pf", "", 5],
}


@pytest.mark.timeout(10)
def test_every_setting_has_invalid_values_checked_here():
    from prefork import config  # (the settings table)
    assert set(INVALID) == {setting.name for setting in config.server_settings()}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name, value", [
    pytest.param(name, value, id=f"{name}={value!r}")
    for name, values in INVALID.items() for value in values])
def test_a_bad_setting_is_refused_at_construction_binding_nothing(name, value):
    before = fd_count()
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        prefork.PreforkTCPServer(("127.0.0.1", 0), prefork.StreamRequestHandler,
                                 **{name: value})
    assert fd_count() == before  # no listener was left open


@pytest.mark.timeout(10)
def test_a_bad_class_attribute_is_refused_too():
    class NoWorkers(prefork.PreforkTCPServer):
        workers = 0  # old: accepted, and clients hung

    before = fd_count()
    with pytest.raises(ValueError, match="workers must be an integer >= 1, not 0"):
        NoWorkers(("127.0.0.1", 0), prefork.StreamRequestHandler)
    assert fd_count() == before


class PreforkThreadingTCPServer(prefork.PreforkMixIn, prefork.ThreadingMixIn, prefork.TCPServer):
    pass


@pytest.mark.timeout(15)
def test_max_threads_is_a_keyword_of_threading_servers_only(spawn, started_file):
    with PreforkThreadingTCPServer(("127.0.0.1", 0), prefork.StreamRequestHandler,
                                   max_threads=1) as server:
        assert server.max_threads == 1

    class PreforkStdlibHTTP(prefork.PreforkMixIn, http.server.ThreadingHTTPServer):
        pass

    before = fd_count()
    for server_class in (prefork.PreforkTCPServer, PreforkStdlibHTTP):
        with pytest.raises(ValueError, match="max_threads needs a server with prefork's "
                                             "ThreadingMixIn"):
            server_class(("127.0.0.1", 0), prefork.StreamRequestHandler, max_threads=1)

    class SyncWithMaxThreads(prefork.PreforkTCPServer):
        max_threads = 8  # as a class attribute, where it would be silently ignored

    with pytest.raises(ValueError, match="max_threads needs"):
        SyncWithMaxThreads(("127.0.0.1", 0), prefork.StreamRequestHandler)
    assert fd_count() == before

    # And applied: one worker with max_threads=1 runs two requests one after the other.
    path, env = started_file
    process, address = start_booted(spawn, "--mixin", "threading", "--set", "max_threads=1",
                                    workers=1, env=env)
    slow = [threading.Thread(target=request, args=(address, "sleep 0.3")) for _ in range(2)]
    for thread in slow:
        thread.start()
    first, second = sorted(started_requests(path, 2))
    for thread in slow:
        thread.join(CLIENT_TIMEOUT)
    assert second - first >= 0.3, (first, second)
    stop_server(process)


# -- 3. the file at a Unix socket's path ----------------------------------------------------

UNIX = {"unix": (socket.SOCK_STREAM, prefork.PreforkUnixStreamServer),
        "unixgram": (socket.SOCK_DGRAM, prefork.PreforkUnixDatagramServer)}


def ask(path, kind, unix_dir):
    """An echo request to a commands.py server at path: by stream, or by datagram
    from a fresh client path (a Unix datagram client must bind to get a reply)."""
    if kind == socket.SOCK_STREAM:
        return echo(path)
    client_path = os.path.join(unix_dir, f"client-{len(os.listdir(unix_dir))}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.settimeout(CLIENT_TIMEOUT)
        client.bind(client_path)
        client.sendto(b"echo hello", path)
        reply = parse_reply(client.recv(1024).decode().rstrip("\n"))
    os.unlink(client_path)
    assert reply.text == "hello", reply
    return reply


@pytest.mark.timeout(20)
@pytest.mark.parametrize("family", UNIX)
def test_a_stale_socket_file_left_by_a_killed_master_is_removed(spawn, unix_dir, family):
    kind, _ = UNIX[family]
    path = os.path.join(unix_dir, "server.sock")
    args = ("--family", family, "--address", path)
    process, _ = start_booted(spawn, *args, workers=1)
    ask(path, kind, unix_dir)
    process.stop(signal.SIGKILL)  # the master and its workers, at once
    assert stat.S_ISSOCK(os.stat(path).st_mode), "the killed master left no socket file"
    with socket.socket(socket.AF_UNIX, kind) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(path)  # nobody listens: stale

    process, _ = start_booted(spawn, *args, workers=1)  # old: EADDRINUSE, no start
    assert ask(path, kind, unix_dir).generation == 1
    assert any(f"Removed stale socket file {path}" in line for line in process.lines), \
        "".join(process.lines)
    stop_server(process)
    assert not os.path.exists(path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("family", UNIX)
def test_a_live_servers_socket_file_is_refused_and_left_alone(spawn, unix_dir, family):
    kind, server_class = UNIX[family]
    path = os.path.join(unix_dir, "server.sock")
    process, _ = start_booted(spawn, "--family", family, "--address", path, workers=1)
    before = os.stat(path)
    fds = fd_count()
    with pytest.raises(OSError) as refused:
        server_class(path, prefork.BaseRequestHandler)
    assert refused.value.errno == errno.EADDRINUSE
    assert f"another server is listening on {path}" in str(refused.value)
    assert fd_count() == fds, "the refused server left descriptors open"
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert ask(path, kind, unix_dir).generation == 1  # the first server serves on

    # Anything but a socket file is left alone, for bind() to refuse.
    other = os.path.join(unix_dir, "not-a-socket")
    with open(other, "w") as f:
        f.write("keep me")
    with pytest.raises(OSError) as refused:
        server_class(other, prefork.BaseRequestHandler)
    assert refused.value.errno == errno.EADDRINUSE
    with open(other) as f:
        assert f.read() == "keep me"
    stop_server(process)


# -- 4. max_worker_memory ----------------------------------------------------------------

GROW = 4  # MiB a request keeps alive in its worker
MAX_REQUESTS = 40  # bounds the test's memory: 160 MiB past the baseline at most


@pytest.mark.timeout(20)
def test_max_worker_memory_is_checked_after_each_request(spawn):
    process, address = start_booted(spawn, workers=1)
    baseline = psutil.Process(echo(address).pid).memory_info().rss
    process.stop(signal.SIGTERM)  # (only measured: the limit is a setting at start)

    limit = baseline + (40 << 20)
    process, address = start_booted(spawn, "--set", f"max_worker_memory={limit}", workers=1)
    first = echo(address).pid
    peak = 0
    for _ in range(MAX_REQUESTS):  # back to back: the worker must not outgrow its checks
        pid = int(request(address, f"grow {GROW}").split()[0])
        if pid != first:
            break
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            peak = max(peak, psutil.Process(pid).memory_info().rss)
    # The worker that went past the limit may be gone before psutil can look:
    # its log line says its RSS then, in whole MiB (rounded down: count 1 more).
    logged = [(int(n) + 1) << 20 for n in re.findall(r"RSS (\d+) MiB", "".join(process.lines))]
    peak = max([peak, *logged])
    assert pid != first, (f"not recycled after {MAX_REQUESTS} x {GROW} MiB: peak RSS "
                          f"{peak >> 20} MiB, limit {limit >> 20} MiB")

    line = wait_log(process, "stopping: recycling: RSS")
    assert f"(pid {first})" in line and f"max_worker_memory ({limit >> 20} MiB)" in line, line
    peak = max(peak, (int(re.search(r"RSS (\d+) MiB", line).group(1)) + 1) << 20)
    overshoot = (peak - limit) / (1 << 20)
    print(f"max_worker_memory: baseline {baseline >> 20} MiB, limit {limit >> 20} MiB, "
          f"peak RSS <= {peak >> 20} MiB ({overshoot:+.1f} MiB)")
    assert overshoot <= 3 * GROW + 2, f"peak RSS {peak >> 20} MiB, {overshoot:.1f} MiB past"
    wait_for(lambda: first not in children(process.pid), message="the grown worker to exit")
    assert_no_zombies(process.pid)
    stop_server(process)


# -- 5. clients that go away --------------------------------------------------------------

CLIENTS = 200  # that reset mid-request


def reset_mid_request(address, partial):
    """Connect, send part of a request, and close with SO_LINGER 0: a RST."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(partial)


def reset_clients(address, partial, count, threads=4):
    """count clients, from `threads` threads, each sending `partial` then a RST."""
    def run():
        for _ in range(count // threads):
            reset_mid_request(address, partial)

    running = [threading.Thread(target=run) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(2 * CLIENT_TIMEOUT)


def http_request(address, method, path, body=None):
    connection = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


HEADERS_CUT = b"GET /cut HTTP/1.1\r\nHost: test\r\nAccept: "
BODY_CUT = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100


@pytest.mark.timeout(20)
@pytest.mark.parametrize("args, partial", [
    pytest.param(("--stdlib-http",), HEADERS_CUT, id="stdlib-ThreadingHTTPServer"),
    pytest.param(("--handler", "faulty_http:BodyHTTP"), BODY_CUT, id="sync"),
    pytest.param(("--mixin", "threading", "--handler", "faulty_http:BodyHTTP"), BODY_CUT,
                 id="threading"),
])
def test_clients_resetting_mid_request_are_not_tracebacks(spawn, args, partial):
    process, address = start_booted(spawn, *args, workers=2)
    reset_clients(address, partial, CLIENTS)

    # Still serving.
    for i in range(6):
        assert http_request(address, "GET", f"/after/{i}")[0] == 200
    stdlib = "--stdlib-http" in args
    if not stdlib:
        status, text = http_request(address, "POST", "/", b"y" * 1000)
        assert status == 200 and text.endswith(" got 1000 bytes\n"), (status, text)
        # Any other error in a handler is still reported in full (handle_error).
        with contextlib.suppress(http.client.HTTPException, ConnectionError):
            http_request(address, "GET", "/raise/ValueError")
        wait_log(process, "ValueError: ValueError raised on purpose")
        assert http_request(address, "GET", "/after/the/error")[0] == 200
    code, output = stop(process)
    # Only the ValueError, in full: socketserver's report of it is 2 lines and a traceback.
    errors = 0 if stdlib else 1
    tracebacks = output.count("Traceback")
    assert tracebacks == errors, f"{tracebacks} tracebacks, not {errors}:\n{output[-2000:]}"
    assert output.count("Exception occurred during processing of request") == errors, output
    gone = [line for line in output.splitlines()
            if re.search(r"reset|broken pipe|went away", line, re.IGNORECASE)]
    assert not gone, gone[:5]  # one debug line each: at the default level (INFO), none
    assert code == 0, output


@pytest.mark.timeout(10)
def test_handle_error_makes_a_client_gone_one_debug_line(caplog, capsys):
    handler = load_app("faulty_http").BodyHTTP
    with prefork.PreforkTCPServer(("127.0.0.1", 0), handler, workers=1) as server:
        address = server.server_address

        def serve_one(path):
            caplog.clear()
            with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as client:
                client.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                server.handle_request()  # in the master, as socketserver's
            return [record.getMessage() for record in caplog.records
                    if record.name == "prefork"]

        with caplog.at_level("DEBUG", logger="prefork"):
            for name in ("ConnectionResetError", "BrokenPipeError", "ConnectionAbortedError"):
                messages = serve_one(f"/raise/{name}")
                assert len(messages) == 1 and re.fullmatch(
                    rf"Client 127\.0\.0\.1:\d+ went away: {name} raised on purpose",
                    messages[0]), messages
                assert "Traceback" not in capsys.readouterr().err
            assert serve_one("/raise/ValueError") == []
            err = capsys.readouterr().err
            assert "Traceback" in err and "ValueError: ValueError raised on purpose" in err, err


# -- 6. a handler that a reload cannot reload ------------------------------------------------

SCRIPT = '''\
import os
import sys

import prefork


class Hello(prefork.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"%d hello\\n" % os.getpid())


if sys.argv[1] == "module":
    from hello_handler import Hello  # noqa: F811 -- importable: reloadable


class Server(prefork.PreforkTCPServer):
    workers = 1
    graceful_timeout = 5
    preload_app = sys.argv[1] == "preload"

    def when_ready(self):
        sys.stdout.write("READY %s:%d\\n" % self.server_address)
        sys.stdout.flush()


with Server(("127.0.0.1", 0), Hello) as server:
    server.serve_forever(poll_interval=0.1)
'''

MODULE = '''\
import os

import prefork


class Hello(prefork.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"%d hello\\n" % os.getpid())
'''

NOT_RELOADABLE = ("The handler Hello is defined in the script itself (__main__): a reload "
                  "(HUP) starts new workers but cannot load new code for it; define it in an "
                  "importable module to reload its code")


@pytest.mark.timeout(20)
def test_a_handler_defined_in_the_script_is_said_not_reloadable(spawn, tmp_path):
    (tmp_path / "server.py").write_text(SCRIPT)
    (tmp_path / "hello_handler.py").write_text(MODULE)
    # __main__ (warned), from a module (reloadable), preloaded (nothing to reload).
    expected = {"main": 1, "module": 0, "preload": 0}
    processes = {mode: spawn([PYTHON, str(tmp_path / "server.py"), mode], cwd=str(tmp_path))
                 for mode in expected}
    for mode, process in processes.items():
        line = process.readline_until(lambda l: l.startswith("READY "))
        host, port = line.split()[1].split(":")
        warned = sum(NOT_RELOADABLE in l for l in process.lines)
        assert warned == expected[mode], (mode, "".join(process.lines))  # at start
        assert request((host, int(port)), "").endswith(" hello")

        os.kill(process.pid, signal.SIGHUP)
        wait_log(process, "Reloaded: generation 2 serving")
        warned = sum(NOT_RELOADABLE in l for l in process.lines)
        assert warned == 2 * expected[mode], (mode, "".join(process.lines))  # and at each HUP
        assert request((host, int(port)), "").endswith(" hello")
        stop_server(process)


# -- 7. a reload that cannot boot --------------------------------------------------------

@pytest.mark.timeout(20)
def test_a_syntax_error_in_a_reload_names_the_users_file_and_line(spawn, tmp_path):
    module_path = tmp_path / "user_commands.py"
    shutil.copy(os.path.join(APPS, "commands.py"), module_path)
    process, address = start_booted(
        spawn, "--path", str(tmp_path), "--handler", "user_commands:StreamCommands",
        "--set", "boot_attempts=2", *QUICK, workers=1)
    before = echo(address)
    assert before.generation == 1

    source = module_path.read_text().splitlines()
    lineno = source.index('VERSION = "v1"') + 1
    source[lineno - 1] = 'VERSION = ("v2"'  # an unclosed "(" on a known line
    module_path.write_text("\n".join(source) + "\n")
    os.kill(process.pid, signal.SIGHUP)

    error = (f"SyntaxError: '(' was never closed (at {module_path}, line {lineno}: "
             f'VERSION = ("v2")')
    first = wait_log(process, "failed to boot")
    assert f"Worker failed to boot (attempt 1 of 2): {error}" in first, first
    again = wait_log(process, "failed to boot again")
    assert "Worker failed to boot again (attempt 2 of 2)" in again, again
    failed = wait_log(process, "Reload failed")
    assert f"Reload failed, keeping generation 1: {error}" in failed, failed

    # Generation 1 serves on: the same worker, never asked to stop meanwhile.
    replies = [echo(address, f"after {i}") for i in range(4)]
    assert all(reply.generation == 1 for reply in replies), replies
    assert_no_zombies(process.pid)
    code, output = stop(process)
    assert "<frozen" not in output, output
    assert {reply.pid for reply in replies} == {before.pid}, output
    stopped = output.index(f"(pid {before.pid}) stopping")
    assert stopped > output.index("Stopping (graceful)"), output  # only by the final TERM
    assert code == 0, output
