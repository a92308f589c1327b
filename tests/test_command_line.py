"""The prefork command's command line, $PREFORK_CMD_ARGS and config file,
run for real (`python -m prefork` and the console script), and how it tells
every user mistake.

1. --help lists every setting of config.SETTINGS by each of its flags, under
   the section headings of config.SECTIONS in their order, with MODULE:OBJECT
   and the signals/exit-status epilog; --version prints the version.
2. A user's mistake -- on the command line, in $PREFORK_CMD_ARGS, in the
   config file, or found while starting (a taken port, a live pidfile...) --
   is one line `prefork: ...` on stderr, exit status 1, nothing on stdout and
   nothing left listening.  --debug adds the traceback before that line; an
   error raised by the application's own code at import shows that code's
   traceback, once, without prefork's or importlib's frames.
3. Precedence, seen with --print-config: default < config file <
   $PREFORK_CMD_ARGS < command line, for a scalar and for the bind list.
4. --check-config: what would run (application and kind, binds, workers and
   worker class, hooks), binding nothing; exit 1 with the one-line error for
   a broken configuration.
5. `python -m prefork` and the installed console script both work.
"""

import os
import re
import sys

import pytest

import prefork
from prefork import cli, config
from support import (
    APPS, ROOT, assert_one_line_error, free_port, port_is_free, printed_config, run_prefork,
    taken_port, write_config)

APP = "command_apps:Echo"
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "prefork")


# -- helpers -----------------------------------------------------------------------

def summary(result):
    """--check-config's output after its first line: {"bind": "...", ...}."""
    lines = result.stdout.splitlines()
    assert lines[0] == "prefork: configuration OK", result.stdout
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[1:])


# -- --help and --version ---------------------------------------------------------------

HELP_HEADING = re.compile(r"^(\S[^:]*):$")


def help_sections(text):
    """{heading: the lines under it} for --help's column-0 "heading:" lines, in order."""
    sections, current = {}, None
    for line in text.splitlines():
        match = HELP_HEADING.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def shows_flag(lines, flag):
    """Whether flag is one of the option strings in these --help lines."""
    pattern = re.compile(r"^  (-\S+( \S+)?, )*" + re.escape(flag) + r"( |,|$)")
    return any(pattern.match(line) for line in lines)


@pytest.mark.timeout(10)
def test_help_lists_every_setting_by_each_flag_under_its_section():
    result = run_prefork("--help")
    assert (result.returncode, result.stderr) == (0, "")
    sections = help_sections(result.stdout)
    assert [name for name in sections if name in config.SECTIONS] == config.SECTIONS
    missing = [(setting.name, flag) for setting in config.SETTINGS.values()
               for flag in setting.flags if not shows_flag(sections[setting.section], flag)]
    assert missing == [], result.stdout


@pytest.mark.timeout(10)
def test_help_shows_usage_application_and_the_signals_and_exit_status_epilog():
    result = run_prefork("--help")
    assert result.returncode == 0
    text = result.stdout
    assert text.startswith("usage: prefork [OPTIONS] MODULE:OBJECT\n")
    assert "MODULE:OBJECT" in text.split("\n", 1)[1]  # the positional argument, explained
    epilog = text[text.index("signals to the master:"):]
    for words in ("TERM", "graceful stop", "INT, QUIT", "HUP", "reload", "TTIN, TTOU",
                  "USR1", "reopen the log files", "exit status:", "1 a startup error"):
        assert words in epilog, words


@pytest.mark.timeout(10)
def test_version_prints_the_package_version():
    result = run_prefork("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"prefork {prefork.__version__}\n", "")


# -- user mistakes: one line, exit status 1 ------------------------------------------------

def mistake(id, args, message, files=None, cwd=None):
    """A row of MISTAKES.  args and message may name {port} (a free port the
    command is told to bind, given as -b unless args bind), {tmp} (the test's
    tmp_path, where `files` {name: text} are written), {apps} (tests/apps).
    cwd "tmp": run in tmp_path rather than tests/apps."""
    return pytest.param(args, message, files or {}, cwd, id=id)


NOT_FOUND = "no module named 'no_such_module' in {apps} or on the Python path"

MISTAKES = [
    # -- the command line --
    mistake("no-application", [],
            "no application given: prefork [OPTIONS] MODULE:OBJECT (prefork --help for more)"),
    mistake("unknown-option-close-match", ["--wrokers", "2", APP],
            "unknown option --wrokers (did you mean --workers?)"),
    mistake("extra-positional", [APP, "extra"],
            "unexpected argument 'extra': give one MODULE:OBJECT"),
    # -- the application --
    mistake("no-such-module", ["no_such_module:app"],
            "application 'no_such_module:app': " + NOT_FOUND),
    mistake("no-such-attribute", ["command_apps:Nope"],
            "application 'command_apps:Nope': no attribute 'Nope' in module 'command_apps' "
            "({apps}/command_apps.py)"),
    mistake("object-of-no-usable-kind", ["command_apps:NOT_AN_APP"],
            "application 'command_apps:NOT_AN_APP': int 42 is not a request handler class, "
            "a server class or a WSGI application (a callable)"),
    mistake("class-neither-handler-nor-server", ["plain:Plain"],
            "application 'plain:Plain': the class Plain is neither a request handler "
            "(BaseRequestHandler) nor a server (BaseServer) class",
            files={"plain.py": "class Plain:\n    pass\n"}, cwd="tmp"),
    # -- bad values --
    mistake("bad-int", [APP, "-w", "many"], "workers must be an integer >= 1, not 'many'"),
    mistake("int-below-minimum", [APP, "-w", "0"], "workers must be an integer >= 1, not 0"),
    mistake("bad-float", [APP, "--graceful-timeout", "soon"],
            "graceful_timeout must be a number >= 0, not 'soon'"),
    mistake("bad-choice", [APP, "-k", "gevent"],
            "worker_class must be one of sync, threading, forking, not 'gevent'"),
    mistake("bad-optional", [APP, "--request-timeout", "-1"],
            "request_timeout must be a number >= 0.01 or none, not -1.0"),
    mistake("bad-umask", [APP, "--umask", "999"],
            "umask must be an octal mode from 000 to 777 or none, not '999'"),
    # -- bind specs --
    mistake("bind-port-not-a-number", [APP, "-b", "localhost:http"],
            "bind 'localhost:http': the port must be a number from 0 to 65535"),
    mistake("bind-ipv6-unclosed", [APP, "-b", "[::1"],
            "bind '[::1': an IPv6 address is written [ADDRESS]:PORT"),
    mistake("bind-unix-no-path", [APP, "-b", "unix:"], "bind 'unix:': no path after 'unix:'"),
    mistake("bind-fd-not-a-number", [APP, "-b", "fd://x"],
            "bind 'fd://x': fd:// needs a descriptor number, e.g. fd://3"),
    mistake("bind-port-too-big", [APP, "-b", "1.2.3.4:70000"],
            "bind '1.2.3.4:70000': the port must be a number from 0 to 65535"),
    mistake("bind-fd-not-open", [APP, "-b", "fd://99"],  # (subprocess closes fds > 2)
            "bind 'fd://99': descriptor 99 is not an open socket"),
    # -- settings that do not go together --
    mistake("threads-with-forking", [APP, "--threads", "4", "-k", "forking"],
            "threads (4) needs worker_class threading, not forking"),
    mistake("max-threads-with-sync", [APP, "--max-threads", "2"],
            "max_threads needs worker_class threading, not sync"),
    mistake("workers-over-max-workers", [APP, "-w", "20", "--max-workers", "4"],
            "workers (20) must not exceed max_workers (4)"),
    mistake("binds-mix-stream-and-datagram",
            [APP, "-b", "127.0.0.1:{port}", "-b", "udp://127.0.0.1:{port}"],
            "the binds mix stream and datagram sockets (127.0.0.1:{port}, "
            "udp://127.0.0.1:{port}): one server reads one kind; run one prefork "
            "command for each"),
    mistake("wsgi-app-on-udp", ["command_apps:app", "-b", "udp://127.0.0.1:{port}"],
            "command_apps:app (a WSGI application) serves stream sockets: it cannot serve "
            "udp://127.0.0.1:{port}"),
    mistake("stream-handler-on-udp", [APP, "-b", "udp://127.0.0.1:{port}"],
            "command_apps:Echo (a request handler class) serves stream sockets: it cannot "
            "serve udp://127.0.0.1:{port}"),
    mistake("reuse-port-with-two-binds",
            [APP, "--reuse-port", "-b", "127.0.0.1:{port}", "-b", "127.0.0.2:{port}"],
            "reuse_port works with one bind"),
    mistake("unknown-user", [APP, "--user", "no_such_user_pf"],
            "user 'no_such_user_pf': no such user"),
    mistake("unknown-group", [APP, "--group", "no_such_group_pf"],
            "group 'no_such_group_pf': no such group"),
    # -- the config file --
    mistake("config-file-missing", [APP, "-c", "{tmp}/missing.py"],
            "config file {tmp}/missing.py: No such file or directory"),
    mistake("config-file-syntax-error", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: SyntaxError: invalid syntax "
            "(at {tmp}/conf.py, line 3: workers = 2 +)",
            files={"conf.py": "# settings\n\nworkers = 2 +\n"}),
    mistake("config-file-raises", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: KeyError: 'NO_SUCH_KEY' "
            "(at {tmp}/conf.py, line 2: workers = {{}}['NO_SUCH_KEY'])",
            files={"conf.py": "import os\nworkers = {}['NO_SUCH_KEY']\n"}),
    mistake("config-file-bad-value", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: workers must be an integer >= 1, not 'many'",
            files={"conf.py": 'workers = "many"\n'}),
    mistake("config-file-typo", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: unknown setting 'worker' (did you mean 'workers'?)",
            files={"conf.py": "worker = 3\n"}),
    mistake("config-file-sets-config", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: config can only be set on the command line",
            files={"conf.py": 'config = "other.py"\n'}),
    mistake("config-file-sets-check-config", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: check_config can only be set on the command line",
            files={"conf.py": "check_config = True\n"}),
    mistake("config-file-hook-not-callable", [APP, "-c", "{tmp}/conf.py"],
            "config file {tmp}/conf.py: hook post_fork must be a function, not int",
            files={"conf.py": "post_fork = 3\n"}),
]


def expand(text, port, tmp_path):
    return text.format(port=port, tmp=tmp_path, apps=APPS)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("args, message, files, cwd", MISTAKES)
def test_a_user_mistake_is_one_line_and_exit_status_1(tmp_path, args, message, files, cwd):
    port = free_port()
    for name, text in files.items():
        write_config(tmp_path / name, text)
    args = [expand(arg, port, tmp_path) for arg in args]
    if "-b" not in args:
        args += ["-b", f"127.0.0.1:{port}"]  # so that "nothing left listening" means something
    result = run_prefork(*args, cwd=tmp_path if cwd == "tmp" else APPS)
    assert_one_line_error(result, expand(message, port, tmp_path))
    assert port_is_free(("127.0.0.1", port))


@pytest.mark.timeout(15)
def test_a_taken_port_is_refused_and_the_binds_already_opened_are_closed():
    opened_first = free_port()
    with taken_port() as port:
        result = run_prefork(APP, "-b", f"127.0.0.1:{opened_first}", "-b", f"127.0.0.1:{port}")
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert port_is_free(("127.0.0.1", opened_first))


@pytest.mark.timeout(15)
def test_a_live_pidfile_is_refused_and_left_untouched(tmp_path):
    pidfile = tmp_path / "prefork.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test's process: surely alive
    before = pidfile.stat().st_mtime_ns
    port = free_port()
    result = run_prefork(APP, "-p", str(pidfile), "-b", f"127.0.0.1:{port}")
    assert_one_line_error(result, f"pidfile {pidfile}: prefork is already running "
                          f"(pid {os.getpid()}); stop it first, or remove the file if it "
                          "is not prefork")
    assert pidfile.read_text() == f"{os.getpid()}\n"
    assert pidfile.stat().st_mtime_ns == before
    assert port_is_free(("127.0.0.1", port))


@pytest.mark.timeout(15)
@pytest.mark.parametrize("value, message", [
    pytest.param("--wrokers 3", "unknown option --wrokers (did you mean --workers?)",
                 id="unknown-option"),
    pytest.param("-w many", "workers must be an integer >= 1, not 'many'", id="bad-int"),
    pytest.param("-k gevent", "worker_class must be one of sync, threading, forking, "
                 "not 'gevent'", id="bad-choice"),
    pytest.param("-b 'unix:", "No closing quotation", id="unclosed-quote"),
])
def test_a_mistake_in_the_environment_variable_names_it(value, message):
    # The user must learn the mistake is in the environment, not on the command line
    # they are looking at.
    result = run_prefork(APP, "-b", f"127.0.0.1:{free_port()}",
                         env={"PREFORK_CMD_ARGS": value})
    assert_one_line_error(result, f"$PREFORK_CMD_ARGS: {message}")


@pytest.mark.timeout(15)
@pytest.mark.parametrize("args, message", [
    pytest.param([APP, "-w", "many"], "workers must be an integer >= 1, not 'many'",
                 id="bad-int"),
    pytest.param(["no_such_module:app"], "application 'no_such_module:app': "
                 + NOT_FOUND.format(apps=APPS), id="no-such-module"),
])
def test_debug_shows_the_traceback_then_the_same_line(args, message):
    result = run_prefork("--debug", *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("Traceback (most recent call last):\n"), result.stderr
    assert result.stderr.endswith(f"\nprefork: {message}\n"), result.stderr


@pytest.mark.timeout(15)
def test_an_error_in_the_applications_own_code_shows_its_traceback_once():
    result = run_prefork("broken_app:x")
    assert (result.returncode, result.stdout) == (1, "")
    stderr = result.stderr
    assert stderr.startswith("prefork: the application raised an error while loading:\n")
    assert stderr.count("Traceback (most recent call last):") == 1, stderr
    assert stderr.endswith("KeyError: 'PREFORK_TEST_SURELY_UNSET_VARIABLE'\n"), stderr
    frames = re.findall(r'^  File "([^"]+)", line (\d+)', stderr, re.MULTILINE)
    app_file = os.path.join(APPS, "broken_app.py")
    assert (app_file, "10") in frames and (app_file, "7") in frames, stderr  # import, helper()
    prefork_dir = os.path.join(ROOT, "prefork") + os.sep
    assert [f for f, _ in frames if f.startswith(prefork_dir) or "importlib" in f] == [], stderr


# -- precedence, seen with --print-config ---------------------------------------------------

CONFIG_FILE = """\
workers = 3
bind = ["127.0.0.1:1111", "127.0.0.1:1112"]

def post_fork(server, worker):
    pass

def when_ready(server):
    pass
"""


@pytest.fixture
def config_file(tmp_path):
    return write_config(tmp_path / "prefork.conf.py", CONFIG_FILE)


@pytest.mark.timeout(15)
def test_print_config_prints_every_setting():
    values = printed_config(run_prefork(APP, "--print-config"))
    assert set(values) == set(config.SETTINGS) - set(cli.ACTIONS) - {"config"}
    assert values["workers"] == config.SETTINGS["workers"].default


@pytest.mark.timeout(15)
@pytest.mark.parametrize("file, environment, command_line, workers", [
    pytest.param(False, "", [], config.SETTINGS["workers"].default, id="default"),
    pytest.param(True, "", [], 3, id="file-over-default"),
    pytest.param(True, "-w 4", [], 4, id="environment-over-file"),
    pytest.param(True, "-w 4", ["-w", "5"], 5, id="command-line-over-environment"),
    pytest.param(True, "", ["-w", "5"], 5, id="command-line-over-file"),
    pytest.param(False, "-w 4", ["-w", "5"], 5, id="command-line-over-environment-alone"),
])
def test_precedence_of_a_scalar(config_file, file, environment, command_line, workers):
    args = ["-c", config_file] if file else []
    result = run_prefork(APP, "--print-config", *args, *command_line,
                         env={"PREFORK_CMD_ARGS": environment})
    assert printed_config(result)["workers"] == workers


@pytest.mark.timeout(15)
@pytest.mark.parametrize("environment, command_line, bind", [
    pytest.param("", [], ["127.0.0.1:1111", "127.0.0.1:1112"], id="file"),
    pytest.param("-b 127.0.0.1:2221", [], ["127.0.0.1:2221"], id="environment-replaces-file"),
    pytest.param("-b 127.0.0.1:2221", ["-b", "127.0.0.1:3331", "-b", "127.0.0.1:3332"],
                 ["127.0.0.1:3331", "127.0.0.1:3332"], id="command-line-replaces-both"),
    pytest.param("", ["-b", "127.0.0.1:3331"], ["127.0.0.1:3331"],
                 id="command-line-replaces-file"),
])
def test_precedence_of_the_bind_list(config_file, environment, command_line, bind):
    # A list is replaced as a whole, never merged: -b on the command line means
    # "listen here", not "here too".
    result = run_prefork(APP, "--print-config", "-c", config_file, *command_line,
                         env={"PREFORK_CMD_ARGS": environment})
    assert printed_config(result)["bind"] == bind


@pytest.mark.timeout(15)
def test_a_config_file_named_in_the_environment_variable_is_read(config_file):
    result = run_prefork(APP, "--print-config", env={"PREFORK_CMD_ARGS": f"-c {config_file}"})
    values = printed_config(result)
    assert (values["workers"], values["bind"]) == (3, ["127.0.0.1:1111", "127.0.0.1:1112"])


@pytest.mark.timeout(15)
def test_the_application_may_come_from_the_environment_variable():
    result = run_prefork("--print-config", "-w", "3", env={"PREFORK_CMD_ARGS": APP})
    assert printed_config(result)["workers"] == 3
    assert result.stdout.endswith(f"# application: {APP}\n")


# -- --check-config ------------------------------------------------------------------------

@pytest.mark.timeout(15)
def test_check_config_says_what_would_run_and_binds_nothing():
    port = free_port()
    result = run_prefork(APP, "--check-config", "-b", f"127.0.0.1:{port}", "-w", "3")
    assert (result.returncode, result.stderr) == (0, "")
    assert summary(result) == {"application": "command_apps:Echo (a request handler class)",
                               "bind": f"127.0.0.1:{port}", "workers": "3 (sync)"}
    assert port_is_free(("127.0.0.1", port))


@pytest.mark.timeout(15)
def test_check_config_does_not_need_the_port_free():
    # Proof that it binds nothing: it succeeds while another socket listens on the port.
    with taken_port() as port:
        result = run_prefork(APP, "--check-config", "-b", f"127.0.0.1:{port}")
    assert (result.returncode, result.stderr) == (0, "")
    assert summary(result)["bind"] == f"127.0.0.1:{port}"


@pytest.mark.timeout(15)
@pytest.mark.parametrize("app, described", [
    pytest.param("command_apps:Echo", "a request handler class", id="stream-handler"),
    pytest.param("command_apps:Hello", "a request handler class", id="http-handler"),
    pytest.param("command_apps:Calculator", "a server class", id="server-class"),
    pytest.param("command_apps:app", "a WSGI application", id="wsgi"),
    pytest.param("command_apps:create_app('hey')", "a WSGI application", id="factory"),
])
def test_check_config_names_the_application_and_its_kind(app, described):
    result = run_prefork(app, "--check-config", "-b", "127.0.0.1:0")
    assert summary(result)["application"] == f"{app} ({described})"


@pytest.mark.timeout(15)
def test_check_config_with_threads_shows_a_bounded_threading_worker():
    result = run_prefork(APP, "--check-config", "-b", "127.0.0.1:0", "-w", "2",
                         "--threads", "4")
    assert summary(result)["workers"] == "2 (threading, at most 4 requests at once)"


@pytest.mark.timeout(15)
def test_check_config_lists_the_config_files_hooks_and_binds(config_file):
    values = summary(run_prefork(APP, "--check-config", "-c", config_file))
    assert values["hooks"] == "post_fork, when_ready"
    assert values["bind"] == "127.0.0.1:1111, 127.0.0.1:1112"
    assert values["workers"] == "3 (sync)"


@pytest.mark.timeout(15)
@pytest.mark.parametrize("args, message", [
    pytest.param(["-w", "0"], "workers must be an integer >= 1, not 0", id="bad-value"),
    pytest.param(["-b", "127.0.0.1:0", "-b", "udp://127.0.0.1:0"],
                 "the binds mix stream and datagram sockets (127.0.0.1:0, udp://127.0.0.1:0): "
                 "one server reads one kind; run one prefork command for each",
                 id="binds-mix-kinds"),
    pytest.param(["-b", "udp://127.0.0.1:0"], "command_apps:Echo (a request handler class) "
                 "serves stream sockets: it cannot serve udp://127.0.0.1:0", id="app-on-udp"),
    # What a real start would refuse, --check-config must refuse too.
    pytest.param(["--user", "no_such_user_pf"], "user 'no_such_user_pf': no such user",
                 id="unknown-user"),
    pytest.param(["--group", "no_such_group_pf"], "group 'no_such_group_pf': no such group",
                 id="unknown-group"),
])
def test_check_config_refuses_a_broken_configuration_in_one_line(args, message):
    assert_one_line_error(run_prefork(APP, "--check-config", *args), message)


@pytest.mark.timeout(15)
def test_check_config_refuses_a_broken_config_file(tmp_path):
    path = write_config(tmp_path / "conf.py", "worker = 3\n")
    result = run_prefork(APP, "--check-config", "-c", path)
    assert_one_line_error(result, f"config file {path}: unknown setting 'worker' "
                          "(did you mean 'workers'?)")


# -- python -m prefork and the console script ----------------------------------------------

def run_console_script(*args):
    if not os.path.exists(CONSOLE_SCRIPT):
        pytest.skip(f"the console script is not installed at {CONSOLE_SCRIPT} "
                    "(pip install -e . installs it)")
    # The $PYTHONPATH as it is, without ROOT: the installed script must find prefork itself.
    return run_prefork(*args, command=[CONSOLE_SCRIPT],
                       env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})


@pytest.mark.timeout(15)
@pytest.mark.parametrize("run", [run_prefork, run_console_script],
                         ids=["python-m-prefork", "console-script"])
def test_both_commands_run_prefork(run):
    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"prefork {prefork.__version__}\n")
    checked = run(APP, "--check-config", "-b", "127.0.0.1:0")
    assert checked.returncode == 0
    assert checked.stdout.startswith("prefork: configuration OK\n")
    # The exit status of a mistake reaches the shell from both.
    assert_one_line_error(run(APP, "-w", "0"), "workers must be an integer >= 1, not 0")
