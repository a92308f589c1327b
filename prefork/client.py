"""`prefork status` and `prefork ctl`: the control socket's client commands.

    prefork status [--json] [--watch [SECONDS]] [OPTIONS]
    prefork ctl reload | stop [--quick] | workers N | reopen [OPTIONS]

OPTIONS find the master's control socket as the server found it: --control
PATH, or the same -c FILE, --pid FILE or --name NAME the server was started
with (config.default_control_socket()).  A master that does not answer is
one line on stderr and exit status 1.
"""

import json
import sys
import time

from . import cli, control, status

CTL_COMMANDS = ("reload", "stop", "workers", "reopen")


def main(argv):
    """Run `prefork status ...` or `prefork ctl ...`; return the exit status."""
    verb, rest = argv[0], argv[1:]
    parser = cli.Parser(prog=f"prefork {verb}")
    where = parser.add_argument_group("which master (as it was started)")
    for flags, metavar in ((("--control",), "PATH"), (("-p", "--pid"), "FILE"),
                           (("-c", "--config"), "FILE"), (("-n", "--name"), "NAME")):
        where.add_argument(*flags, metavar=metavar, dest=flags[-1][2:])
    if verb == "status":
        parser.add_argument("--json", action="store_true", help="the status as JSON")
        parser.add_argument("--watch", nargs="?", type=float, const=1.0, metavar="SECONDS",
                            help="refresh every SECONDS (default 1), as top does")
    else:
        parser.add_argument("words", nargs="+", metavar="COMMAND",
                            help="reload, stop [--quick], workers N, reopen")
        parser.add_argument("--quick", action="store_true", help="with stop: a quick stop")
    own = parser.parse_args(rest)
    settings = [item for name in ("control", "pid", "config", "name")
                if getattr(own, name) is not None for item in (f"--{name}", getattr(own, name))]
    path = cli.read_config(settings, need_app=False).control_socket
    if path is None:
        raise cli.UsageError("no control socket to ask: give --control PATH (or the "
                             "server's --pid FILE or -c FILE)")
    try:
        if verb == "status":
            return show_status(path, own.json, own.watch)
        return run_command(path, own.words, own.quick)
    except control.NotRunning as error:
        print(f"prefork: {error}", file=sys.stderr)
        return 1


def show_status(path, as_json, watch):
    if watch is None:
        answer = ask(path, "status")
        print(json.dumps(answer, indent=2) if as_json else status.render(answer))
        return 0
    sys.stdout.write("\x1b[H\x1b[2J")
    try:
        while True:
            text = status.render(ask(path, "status"))
            # Home, the new text over the old, then clear what is left: no flicker.
            sys.stdout.write("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


def run_command(path, words, quick):
    if words[0] not in CTL_COMMANDS:
        raise cli.UsageError(f"unknown command {words[0]!r}: {', '.join(CTL_COMMANDS)}")
    line = " ".join(words) + (" --quick" if quick else "")
    print(json.dumps(ask(path, line)))
    return 0


def ask(path, line):
    """The master's answer to line; NotRunning with its error if it refused."""
    answer = control.query(path, line)
    if not answer.get("ok"):
        raise control.NotRunning(answer.get("error", "the master refused"))
    return answer
