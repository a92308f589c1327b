"""systemd's two small protocols, written by hand (no libsystemd):

- socket activation (sd_listen_fds(3)): listen_fds() takes the listening
  sockets systemd passed as descriptors 3, 4, ...;
- readiness notification (sd_notify(3)): a Notifier sends "K=V" datagrams
  to $NOTIFY_SOCKET -- READY, RELOADING, STOPPING, STATUS, MAINPID, WATCHDOG.
"""

import fcntl
import logging
import os
import socket
import time

log = logging.getLogger("prefork")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first descriptor systemd passes
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(environ=os.environ, unset=True):
    """The sockets systemd passed to this process: [(fd, name), ...] for
    descriptors 3 .. 3+LISTEN_FDS-1, or [] when none were passed to us
    (LISTEN_PID unset or another process's pid, LISTEN_FDS unset or 0).

    Names come from LISTEN_FDNAMES (colon-separated, FileDescriptorName= or
    --fdname=); a descriptor without one is "unknown", as in
    sd_listen_fds_with_names(3).  Each descriptor gets FD_CLOEXEC: the
    sockets are shared with the workers by fork, never by exec.

    unset: remove LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from environ in
    every case (as libsystemd does), so that no child takes them for its own.

    Raises ValueError naming the variable and its value when LISTEN_PID or
    LISTEN_FDS is not a number of the right kind, or when a descriptor it
    announces is not open.
    """
    values = {name: environ.get(name) for name in LISTEN_VARIABLES}
    if unset:
        for name in LISTEN_VARIABLES:
            environ.pop(name, None)
    pid_text, count_text, names_text = (values[name] for name in LISTEN_VARIABLES)
    if not pid_text:
        return []
    if _number(pid_text) is None or int(pid_text) <= 0:
        raise ValueError(f"LISTEN_PID={pid_text!r}: expected a process id")
    if int(pid_text) != os.getpid():
        return []  # meant for another process (we were forked, or exec'd by a wrapper)
    count = _number(count_text or "0")
    if count is None:
        raise ValueError(f"LISTEN_FDS={count_text!r}: expected a number of descriptors")
    names = names_text.split(":") if names_text else []
    found = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError:
            raise ValueError(f"LISTEN_FDS={count_text!r}: descriptor {fd} is not open") \
                from None
        name = names[index] if index < len(names) else ""
        found.append((fd, name or "unknown"))
    return found


def _number(text):
    """int(text) for a plain decimal number ("12"), else None."""
    text = text.strip()
    return int(text) if text.isdigit() else None


class Notifier:
    """sd_notify(3): state changes told to systemd, one datagram each.

    address: $NOTIFY_SOCKET's socket -- a path, or "\\0name" for an abstract
    socket ("@name" in the environment); None makes a Notifier that sends
    nothing, so callers never test whether systemd is there.

    watchdog_interval: seconds between two watchdog() calls (half of
    WATCHDOG_USEC, as sd_watchdog_enabled(3) advises), or None when systemd
    does not watch this process.
    """

    def __init__(self, address=None, watchdog_interval=None):
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._socket = None
        self._failed = False  # a failure was logged at WARNING already

    @classmethod
    def from_environment(cls, environ=os.environ):
        """A Notifier for $NOTIFY_SOCKET and $WATCHDOG_USEC/$WATCHDOG_PID;
        one that sends nothing when NOTIFY_SOCKET is unset or empty.

        The variables stay in environ: a new master exec'd by a binary
        upgrade notifies systemd too (MAINPID=).  Raises ValueError naming
        the variable for a NOTIFY_SOCKET that is neither an absolute path nor
        "@name", or a WATCHDOG_USEC or WATCHDOG_PID that is not a number.
        """
        text = environ.get("NOTIFY_SOCKET") or ""
        if not text:
            return cls()
        if text.startswith("@"):
            address = "\0" + text[1:]
        elif text.startswith("/"):
            address = text
        else:
            raise ValueError(f"NOTIFY_SOCKET={text!r}: expected an absolute path or @NAME")
        return cls(address, _watchdog_interval(environ))

    @property
    def enabled(self):
        """Whether notifications go anywhere."""
        return self.address is not None

    def send(self, *assignments):
        """Send the assignments ("READY=1", ...) as one datagram "K=V\\nK=V";
        return whether it was sent.

        Never raises: a dead or full systemd must not stop the server.  The
        first failure is logged on the "prefork" logger at WARNING, the later
        ones at DEBUG.  Never blocks (MSG_DONTWAIT).
        """
        if self.address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                # Python's sockets are made close-on-exec (SOCK_CLOEXEC).
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(data, socket.MSG_DONTWAIT, self.address)
        except OSError as error:
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            log.log(level, "Cannot notify systemd at NOTIFY_SOCKET=%s: %s",
                    self.address.replace("\0", "@", 1), error)
            return False
        return True

    def ready(self, status=None):
        """READY=1: start-up (or a reload) is complete; STATUS= if given."""
        return self.send("READY=1", *_status(status))

    def reloading(self, status=None):
        """RELOADING=1 with MONOTONIC_USEC= now, as Type=notify-reload
        (systemd 253+) requires; ready() again once the reload is complete."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now}", *_status(status))

    def stopping(self, status=None):
        """STOPPING=1: the service is shutting down."""
        return self.send("STOPPING=1", *_status(status))

    def status(self, text):
        """STATUS=text: one line for `systemctl status` (newlines become spaces)."""
        return self.send(*_status(text))

    def mainpid(self, pid):
        """MAINPID=pid: the service's main process is now pid (binary upgrade)."""
        return self.send(f"MAINPID={int(pid)}")

    def watchdog(self):
        """WATCHDOG=1: the main loop is alive; due every watchdog_interval."""
        return self.send("WATCHDOG=1")

    def close(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text):
    return () if text is None else ("STATUS=" + " ".join(str(text).splitlines()),)


def _watchdog_interval(environ):
    """Half of WATCHDOG_USEC in seconds, if it is meant for this process."""
    usec_text = environ.get("WATCHDOG_USEC") or ""
    if not usec_text:
        return None
    usec = _number(usec_text)
    if usec is None:
        raise ValueError(f"WATCHDOG_USEC={usec_text!r}: expected microseconds")
    pid_text = environ.get("WATCHDOG_PID") or ""
    if pid_text:
        if _number(pid_text) is None:
            raise ValueError(f"WATCHDOG_PID={pid_text!r}: expected a process id")
        if int(pid_text) != os.getpid():
            return None
    return usec / 2 / 1e6 if usec else None
