"""USR2: a binary upgrade that keeps the listening sockets, as nginx's.

The old master forks and execs its own command line (sys.orig_argv) with its
listening sockets inherited, their descriptors named in PREFORK_UPGRADE_FDS;
the new master takes them instead of binding (inherited_listeners()), boots
its workers and serves beside the old one -- both pools accept on the same
sockets, so no connection is refused or lost.  TERM to the old master (or
`prefork ctl stop` on its control socket) finishes the hand-over.

Files move as nginx's do: the pidfile becomes PIDFILE.oldbin while the new
master writes PIDFILE, and the old control socket becomes PATH.oldbin, so
that `prefork status` reaches the new master.  If the new master exits
before the old one stops (its code fails to import, say), the files move
back and the old master serves on, saying so.
"""

import logging
import os
import sys

from .listeners import inherit

log = logging.getLogger("prefork")

FDS_VARIABLE = "PREFORK_UPGRADE_FDS"
FROM_VARIABLE = "PREFORK_UPGRADE_FROM"
# Set by a master serving on systemd's sockets: its successor serves on
# exactly those too, whatever its binds say (they were never its own).
ACTIVATED_VARIABLE = "PREFORK_SOCKETS_FROM_SYSTEMD"
OLD_SUFFIX = ".oldbin"


class Upgrade:
    """One hand-over in progress, as the old master sees it.

    pid: the new master's.  moved: the files renamed to .oldbin (moved back
    if the new master fails).
    """

    def __init__(self, listeners, files):
        self.moved = [path for path in files if path and _rename(path, path + OLD_SUFFIX)]
        try:
            self.pid = _fork_exec(listeners)
        except BaseException:
            self.move_back()
            raise
        log.info("Upgrade: started a new master (pid %d) with the listening sockets; "
                 "TERM this master (pid %d) once it serves", self.pid, os.getpid())

    def exited(self):
        """The new master's exit status if it has exited (reaped), else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return os.waitstatus_to_exitcode(status) if pid else None

    def failed(self, code):
        self.move_back()
        log.error("Upgrade failed: the new master (pid %d) exited with code %d; this master "
                  "(pid %d) keeps serving", self.pid, code, os.getpid())

    def move_back(self):
        for path in self.moved:
            _rename(path + OLD_SUFFIX, path)
        self.moved = []

    def handed_over(self):
        """This master is leaving with the new one serving: its .oldbin files go."""
        for path in self.moved:
            try:
                os.unlink(path + OLD_SUFFIX)
            except FileNotFoundError:
                pass


def _fork_exec(listeners):
    fds = [sock.fileno() for sock in listeners]
    environment = dict(os.environ, **{FDS_VARIABLE: ",".join(map(str, fds)),
                                      FROM_VARIABLE: str(os.getpid())})
    environment.pop("WATCHDOG_PID", None)  # (systemd's watchdog is the new master's to keep)
    pid = os.fork()
    if pid == 0:
        try:
            for fd in fds:
                os.set_inheritable(fd, True)
            os.setpgid(0, 0)  # not in the old master's group: a signal to it is not ours
            os.execve(sys.executable, sys.orig_argv, environment)
        finally:
            os._exit(127)
    return pid


def activated_fds(environ=os.environ):
    """In a new master whose predecessor served on systemd's sockets: those
    descriptors (taken out of the hand-over); else []."""
    if not environ.get(ACTIVATED_VARIABLE) or FDS_VARIABLE not in environ:
        return []
    return [int(fd) for fd in filter(None, environ.pop(FDS_VARIABLE).split(","))]


def inherited_listeners(backlog, environ=os.environ):
    """The sockets an old master handed over (and the pid it had), for the
    new master: ([socket], old pid) -- ([], None) if this is no upgrade."""
    fds = environ.pop(FDS_VARIABLE, "")
    old_pid = environ.pop(FROM_VARIABLE, None)
    sockets = []
    for fd in filter(None, fds.split(",")):
        os.set_inheritable(int(fd), False)
        sockets.append(inherit(int(fd), backlog))
    return sockets, int(old_pid) if old_pid else None


def _rename(source, target):
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return False
    return True
