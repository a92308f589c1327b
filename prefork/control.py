"""The master's control socket, and the client that `prefork status` and
`prefork ctl` use.

The socket is a Unix stream socket (mode 0600) served by prefork's own
framework -- a UnixStreamServer and a StreamRequestHandler -- driven from the
master's loop, which it must never block (channel.py): the handler runs once
a whole line has come, and answers with one non-blocking send.  A client
that sends nothing is closed after CLIENT_DEADLINE; a line longer than
MAX_LINE gets an error.  Only a client of the master's own uid, or root, is
served (SO_PEERCRED).

The protocol: one line in, one JSON object back, then the connection closes.

    status             the master and each worker (Master.status())
    workers N          set the number of workers (as TTIN/TTOU, at once)
    reload             as HUP        stop    as TERM     stop --quick   as QUIT
    reopen             as USR1

Commands other than status are recorded in the master's command queue and
run by its loop, exactly as the signals are.  Every answer has "ok": true or
false (with "error").
"""

import json
import logging
import os
import socket
import struct
import time
from time import monotonic

from .channel import send_now
from .handlers import StreamRequestHandler
from .listeners import remove_stale_unix_socket
from .server import UnixStreamServer

log = logging.getLogger("prefork")

MAX_LINE = 4096         # bytes of a command line
CLIENT_DEADLINE = 2.0   # seconds a client may take to send its line
MAX_CLIENTS = 32        # waiting at once; more are turned away
SIGNAL_COMMANDS = {"reload": "hup", "stop": "term", "stop --quick": "quit", "reopen": "usr1"}


class ControlError(Exception):
    """A command the master cannot run: the answer's "error"."""


class ControlHandler(StreamRequestHandler):
    """One command line in (already there: see ControlChannel), one JSON line out."""

    def handle(self):
        line = self.rfile.readline(MAX_LINE + 1)
        try:
            answer = {"ok": True, **self.run(line)}
        except ControlError as error:
            answer = {"ok": False, "error": str(error)}
        send_now(self.request, json.dumps(answer).encode() + b"\n")

    def run(self, line):
        if len(line) > MAX_LINE:
            raise ControlError(f"command longer than {MAX_LINE} bytes")
        try:
            words = line.decode("ascii").split()
        except UnicodeDecodeError:
            raise ControlError("a command is a line of ASCII words") from None
        command = " ".join(words)
        master = self.server.master
        if command == "status":
            return master.status()
        if command in SIGNAL_COMMANDS:
            master.commands.record(SIGNAL_COMMANDS[command])
            return {"queued": command}
        if len(words) == 2 and words[0] == "workers":
            return {"workers": self.set_workers(master, words[1])}
        raise ControlError(f"unknown command {command[:80]!r}: status, workers N, reload, "
                           "stop, stop --quick, reopen")

    def set_workers(self, master, text):
        limit = master.server.max_workers
        if not text.isdigit() or not 1 <= int(text) <= limit:
            raise ControlError(f"workers must be a number from 1 to max_workers ({limit}), "
                               f"not {text[:20]!r}")
        master.commands.record("workers", int(text))
        return int(text)


class ControlServer(UnixStreamServer):
    """The control socket's server, driven by a channel.Channel from the
    master's loop (never serve_forever())."""

    name = "Control socket"
    request_noun = "command"
    max_request = MAX_LINE
    client_deadline = CLIENT_DEADLINE
    max_clients = MAX_CLIENTS
    # Room in the kernel's queue for a burst of clients between two turns of
    # the master's loop (a full queue refuses a Unix client at once).
    request_queue_size = 4 * MAX_CLIENTS

    def __init__(self, path, master):
        self.master = master
        super().__init__(path, ControlHandler)

    def server_bind(self):
        """Bind with mode 0600: only the owner (and root) may connect."""
        remove_stale_unix_socket(self.server_address, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            super().server_bind()
        finally:
            os.umask(old_umask)

    def request_complete(self, data):
        return b"\n" in data

    def verify_request(self, request, client_address):
        if peer_uid(request) in (0, os.geteuid()):
            return True
        self.refuse(request, "permission denied: not the master's user")
        return False

    def refuse(self, conn, why):
        send_now(conn, json.dumps({"ok": False, "error": why}).encode() + b"\n")
        conn.close()

    def handle_error(self, request, client_address):
        log.exception("Control socket: error answering a client")


def peer_uid(sock):
    """The uid of the process at the other end of a Unix socket."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


# -- the client ---------------------------------------------------------------------

class NotRunning(Exception):
    """No master answers at the control socket."""


def query(path, command, timeout=5.0):
    """Send one command to the control socket at path; its answer (a dict)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, path, monotonic() + timeout)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise NotRunning(f"no prefork master at {path} ({error.strerror.lower()})") \
                from None
        except PermissionError:
            raise NotRunning(f"permission denied: {path} (run as the master's user, or "
                             "root)") from None
        except BlockingIOError:
            raise NotRunning(f"the master at {path} is busy: its control socket's queue "
                             "is full") from None
        try:
            sock.sendall(command.encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused unread (not the master's user): its answer waits to be read
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(f"the prefork master at {path} closed the connection unanswered")
    return json.loads(data)


def _connect(sock, path, deadline):
    """connect(), tried again while the master's queue is full (a Unix socket
    refuses at once with EAGAIN then, whatever the timeout) until deadline."""
    while True:
        try:
            return sock.connect(path)
        except BlockingIOError:
            if monotonic() >= deadline:
                raise
            time.sleep(0.01)
