"""The master's pidfile, as nginx and gunicorn keep theirs.

Checked before anything is bound (a live master's pidfile refuses the
start; a stale one, whose process is gone, is replaced), written once the
master is ready, removed at exit -- only if it still holds our pid.
"""

import errno
import os


class PidfileError(Exception):
    """Another live process owns the pidfile."""


class Pidfile:
    def __init__(self, path):
        self.path = os.path.abspath(path)

    def check(self):
        """Raise PidfileError if the pid in the file is a live process
        (other than us); return the stale pid found, or None."""
        directory = os.path.dirname(self.path)
        if not os.access(directory, os.W_OK):
            raise PidfileError(f"pidfile {self.path}: cannot write in {directory}")
        pid = self.read()
        if pid is None or pid == os.getpid():
            return None
        if pid_alive(pid):
            raise PidfileError(f"pidfile {self.path}: prefork is already running "
                               f"(pid {pid}); stop it first, or remove the file if it "
                               "is not prefork")
        return pid

    def write(self, pid):
        """Write pid atomically (a reader never sees a half-written file)."""
        temporary = f"{self.path}.{pid}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{pid}\n")
        os.replace(temporary, self.path)

    def read(self):
        try:
            with open(self.path) as file:
                return int(file.read().strip() or 0) or None
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # garbage: as stale as a dead pid

    def remove(self, pid):
        """Remove the file if it still holds pid (a successor may own it now)."""
        if self.read() == pid:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def pid_alive(pid):
    """Whether process pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM  # alive, someone else's
    return True
