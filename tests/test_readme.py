"""What the README promises, run for real.

Every ```python block of README.md runs as written, as its own process.  One that
serves forever is shown to serve -- connected to, asked, answered -- and then
stopped by its pid.  The snippets bind fixed ports (8000, 9999), so each runs in a
network namespace of its own (unshare --net), probed from inside that namespace
(nsenter): nothing else on the machine can hold or answer those ports.

The settings table is prefork.config's, row for row.

The demo (scripts/demo: the prefork command, with examples/demo_config.py): --help
describes every option, and a reload (HUP) runs the handler's edited code.
"""

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass

import psutil
import pytest

from support import (
    PYTHON, ROOT, assert_one_line_error, assert_tree_gone, http_get, process_tree, run_prefork,
    taken_port, wait_for)

pytestmark = pytest.mark.timeout(60)

README = os.path.join(ROOT, "README.md")
EXAMPLES = os.path.join(ROOT, "examples")
START_TIMEOUT = 15  # seconds for a snippet or the demo to start serving


# -- the README's fenced blocks ------------------------------------------------

def fenced_blocks(path=README):
    """[(info string, text, line number of the opening fence)] of a Markdown file."""
    blocks, info, start, lines = [], None, 0, []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            fence = re.match(r"\s*```(.*)$", line)
            if info is None and fence:
                info, start, lines = fence[1].strip(), number, []
            elif info is not None and fence and not fence[1].strip():
                blocks.append((info, "".join(lines), start))
                info = None
            elif info is not None:
                lines.append(line)
    assert info is None, f"{path}: the block opened at line {start} is never closed"
    return blocks


PYTHON_SNIPPETS = [pytest.param(text, id=f"README.md:{line}")
                   for info, text, line in fenced_blocks() if info == "python"]

# Why the README's other fenced blocks are not run here.  A new kind of block
# must say why here, or be a ```python block that runs.
NOT_RUN = {
    "sh": "commands to type in a shell (the scripts), not Python",
    "": "plain text: the Layout listing",
    "text": "a line of a log, as an example of its format",
    "console": "prefork commands and what they print: run by "
               "test_console_examples_print_what_they_show",
}


@dataclass
class Probe:
    """How to show that a snippet serving forever serves, and how it stops."""

    request: bytes
    answer: str       # a regex the whole answer must match
    stopped: int      # its return code after SIGTERM


# Serving snippets, by the port they bind.
PROBES = {
    # the framework's Upper: a line in, that line upper-cased back.  A plain
    # server has no TERM handler: the signal's default action ends it.
    9999: Probe(b"hello prefork\n", r"HELLO PREFORK\n", -signal.SIGTERM),
    # the prefork layer's Handler: the line back, after the worker that answered.
    # TERM makes the master stop gracefully and exit 0.
    8000: Probe(b"hello prefork\n", r"worker [1-4]: hello prefork\n", 0),
}

# Run in the snippet's namespace: wait until something listens on the port
# (the snippets print nothing when ready), send the request, print the answer.
PROBE_CLIENT = r"""
import socket, sys, time
port, request, timeout = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        break
    except OSError:  # not listening yet
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)
with sock:
    sock.sendall(request)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
sys.stdout.write(answer.decode())
"""


def test_settings_table_is_the_one_in_config():
    """The README documents every setting, with its default, from the one table."""
    from prefork import config

    with open(README, encoding="utf-8") as file:
        assert config.markdown_table() in file.read()


def test_readme_has_python_snippets():
    assert PYTHON_SNIPPETS, "README.md has no ```python block left to run"


def test_every_fenced_block_is_run_or_says_why_not():
    for info, _, line in fenced_blocks():
        assert info == "python" or info in NOT_RUN, (
            f"README.md line {line}: a ```{info} block is neither run as ```python "
            "nor named in NOT_RUN with the reason it cannot run")


# -- the command's examples ---------------------------------------------------------

def console_examples():
    """[(command line, the lines it prints)] of the README's ```console blocks."""
    examples = []
    for info, text, _ in fenced_blocks():
        if info == "console":
            for line in text.splitlines():
                if line.startswith("$ "):
                    examples.append((line[2:], []))
                else:
                    examples[-1][1].append(line)
    return examples


@pytest.mark.timeout(60)
def test_console_examples_print_what_they_show():
    """Each `$ prefork ...` of the README, run in examples/, refuses with the line
    the README shows (its /srv/examples is where examples/ is).  The port the
    README shows held is held here: a port taken for the test, in place of 8000."""
    examples = console_examples()
    assert examples, "README.md has no ```console example of the command"
    for command, shown in examples:
        args = shlex.split(command.split("  #")[0])
        assert args[0] == "prefork", command
        expected = "\n".join(shown).replace("/srv/examples", EXAMPLES)
        with contextlib.ExitStack() as stack:
            if "Address already in use" in expected:
                port = str(stack.enter_context(taken_port()))
                args = [arg.replace("8000", port) for arg in args]
                expected = expected.replace("8000", port)
            result = run_prefork(*args[1:], cwd=EXAMPLES)
        assert_one_line_error(result, expected.removeprefix("prefork: "))


@pytest.mark.timeout(60)
def test_config_file_example_is_one_the_command_accepts(tmp_path):
    """The README's config file (its ```python block that assigns `bind`) passes
    --check-config."""
    blocks = [text for info, text, _ in fenced_blocks()
              if info == "python" and text.startswith("bind = ")]
    assert len(blocks) == 1, "README.md shows one config file"
    path = tmp_path / "app.conf.py"
    path.write_text(blocks[0])
    result = run_prefork("-c", str(path), "--check-config", "hello_wsgi:app", cwd=EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert "hooks        post_fork" in result.stdout, result.stdout


# -- running a snippet in a network namespace of its own ----------------------

def in_new_netns(args):
    """args, run in a new network namespace with its loopback up.  The shell
    execs args, so the pid started is the pid of args' process."""
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args]


@pytest.fixture(scope="module")
def netns_available():
    """Skip, saying why, where this process cannot make network namespaces."""
    if os.geteuid() != 0:
        pytest.skip("README snippets bind fixed ports (8000, 9999): they run only in a "
                    "network namespace of their own, which needs root")
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"README snippets need {', '.join(missing)} to run in a network namespace")
    tried = subprocess.run(in_new_netns(["true"]), capture_output=True, text=True, timeout=10)
    if tried.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {tried.stderr.strip()}")


@contextlib.contextmanager
def netns_of(process):
    """An open descriptor of process's network namespace, once it has left ours.
    Holding it pins the namespace, whatever becomes of the pid."""
    own = os.stat("/proc/self/ns/net").st_ino
    found = {}

    def left_ours():
        try:
            fd = os.open(f"/proc/{process.pid}/ns/net", os.O_RDONLY)
        except FileNotFoundError:  # it has exited already
            return True
        if os.fstat(fd).st_ino == own:  # unshare has not run yet
            os.close(fd)
            return False
        found["fd"] = fd
        return True

    wait_for(left_ours, timeout=START_TIMEOUT, message="the snippet's own network namespace")
    try:
        assert process.popen.poll() is None, "the snippet exited:\n" + process.output()
        yield found["fd"]
    finally:
        if "fd" in found:
            os.close(found["fd"])


def probe(process, netns_fd, port, request):
    """Send request to 127.0.0.1:port in that namespace; return the answer."""
    client = subprocess.Popen(
        ["nsenter", f"--net=/proc/self/fd/{netns_fd}", PYTHON, "-c", PROBE_CLIENT,
         str(port), request.hex(), str(START_TIMEOUT)],
        pass_fds=(netns_fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the answer, or the snippet's death, whichever comes first
        wait_for(lambda: client.poll() is not None or process.popen.poll() is not None,
                 timeout=START_TIMEOUT + 10, message=f"an answer on port {port}")
    finally:
        if client.poll() is None:
            client.kill()
        answer, error = client.communicate()
    assert process.popen.poll() is None, "the snippet exited:\n" + process.output()
    assert client.returncode == 0, f"no answer on port {port}:\n{error}"
    return answer


def stop_all(process, sig):
    """Signal process by its pid and reap it; every process it started must be
    gone too.  Returns its exit code."""
    tree = process_tree(process.pid)
    os.kill(process.pid, sig)
    returncode = process.wait()
    assert_tree_gone(tree)
    return returncode


@pytest.mark.parametrize("snippet", PYTHON_SNIPPETS)
def test_python_snippet_runs_as_written(spawn, netns_available, snippet):
    """It runs unchanged; if it serves forever, it answers its probe, then stops on TERM."""
    process = spawn(in_new_netns([PYTHON, "-c", snippet]))
    if "serve_forever" not in snippet:
        assert process.wait() == 0, process.output()
        assert "0.0.0.0" not in snippet, "README snippets use 127.0.0.1, never every interface"
        return
    with netns_of(process) as netns:
        addresses = re.findall(r'\(\s*"([^"]*)",\s*(\d+)\s*\)', snippet)
        assert len(addresses) == 1, f"a serving snippet binds one address, not {addresses}"
        host, port = addresses[0][0], int(addresses[0][1])
        assert port in PROBES, f"no probe for the snippet serving port {port}: add one to PROBES"
        expected = PROBES[port]
        try:
            answer = probe(process, netns, port, expected.request)
            assert host == "127.0.0.1", f"README snippets bind 127.0.0.1, not {host}"
            assert re.fullmatch(expected.answer, answer), answer
        except BaseException:
            process.stop(signal.SIGTERM)  # not SIGKILL first: a master reaps its workers
            raise
        assert stop_all(process, signal.SIGTERM) == expected.stopped, process.output()


# -- the demo ---------------------------------------------------------------------

def help_entries(text):
    """{option: its description} from argparse's --help output."""
    entries, current = {}, None
    for line in text.splitlines():
        entry = re.match(r"  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if entry:
            current = entry[1]
            entries[current] = entry[2] or ""
        elif current and re.match(r"\s{4,}\S", line):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.timeout(180)  # scripts/demo may first have to (re)install .venv
def test_demo_help_describes_each_option():
    """The demo is the prefork command: its --help describes every setting
    (with its default) and the signals that drive the master."""
    from prefork import config
    result = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    entries = help_entries(text)
    described = {flag: words for option, words in entries.items()
                 for flag in re.findall(r"-[-\w]+", option)}
    for setting in config.SETTINGS.values():
        words = described.get(setting.flags[-1])
        assert words is not None, f"{setting.flags[-1]} missing from:\n{text}"
        assert f"(default: {setting.shown})" in words and len(words.split()) >= 4, (
            f"{setting.flags[-1]} is not described (with its default):\n{text}")
    assert "MODULE:OBJECT" in text.split("options:")[0], text
    for name in ("TERM", "INT", "QUIT", "HUP", "TTIN", "TTOU", "USR1"):
        assert re.search(rf"\b{name}\b", text), f"signal {name} not named in:\n{text}"


@pytest.fixture
def demo_copy():
    """A temporary copy of examples/ (the demo and its handler module); removed after."""
    path = tempfile.mkdtemp(prefix="pf-demo-")
    try:
        shutil.copytree(os.path.join(ROOT, "examples"), path, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def generations_serving(master):
    """The generations of master's live workers, read from their process titles."""
    found = set()
    for child in psutil.Process(master).children():
        with contextlib.suppress(psutil.Error):  # gone meanwhile, or a zombie
            title = " ".join(child.cmdline())  # "prefork worker 3 [gen 2] ..."
            found.update(int(n) for n in re.findall(r"\[gen (\d+)\]", title))
    return found


def test_demo_reload_runs_the_edited_handler(spawn, demo_copy):
    """Edit the greeting in the demo's handler module, HUP the master: generation 2
    answers with the new text, and no page is lost while the generations change."""
    demo = spawn([PYTHON, "-m", "prefork", "-c", "demo_config.py", "-b", "127.0.0.1:0", "-w", "2",
                  "hello_handler:HelloHandler"], cwd=demo_copy)
    line = demo.readline_until(lambda l: "serving http://" in l, timeout=START_TIMEOUT)
    host, port, master = re.search(r"http://([\d.]+):(\d+)/ .*master pid (\d+)", line).groups()
    port, master = int(port), int(master)
    assert master == demo.pid

    handler_path = os.path.join(demo_copy, "hello_handler.py")
    with open(handler_path, encoding="utf-8") as file:
        source = file.read()
    old = re.findall(r'^GREETING = "(.*)"$', source, re.MULTILINE)
    assert len(old) == 1, "hello_handler.py sets GREETING once, as a plain string"
    old = old[0]
    # A different length too: a .pyc is checked by source size and mtime (whole
    # seconds), and this edit may come within the second the .pyc was written.
    new = old + ", edited"

    def page_of(greeting, generation):
        return rf"{re.escape(greeting)} worker \d+ \(pid \d+, generation {generation}\): /reload\n"

    try:
        status, body = http_get((host, port), "/reload")
        assert status == 200 and re.fullmatch(page_of(old, 1), body), body

        with open(handler_path, "w", encoding="utf-8") as file:
            file.write(source.replace(f'GREETING = "{old}"', f'GREETING = "{new}"'))
        os.kill(master, signal.SIGHUP)

        pages = []

        def fetch_until(done):
            def predicate():
                try:
                    pages.append(http_get((host, port), "/reload"))
                except OSError as error:
                    raise AssertionError(f"a page was lost during the reload, after "
                                         f"{len(pages)} answered: {error!r}") from error
                return done()
            return predicate

        wait_for(fetch_until(lambda: "generation 2)" in pages[-1][1]), timeout=30,
                 interval=0.05, message="a generation-2 worker")
        assert re.fullmatch(page_of(new, 2), pages[-1][1]), pages[-1]
        # Through the old generation's retirement too, where a page could be lost.
        wait_for(fetch_until(lambda: generations_serving(master) == {2}), timeout=30,
                 interval=0.05, message="generation 1 to be retired")
        for status, body in pages:
            assert status == 200 and (re.fullmatch(page_of(old, 1), body)
                                      or re.fullmatch(page_of(new, 2), body)), pages
    finally:
        # TERM even on failure: the master reaps its workers (SIGKILL would orphan them)
        code = demo.stop(signal.SIGTERM)
    assert code == 0, demo.output()
