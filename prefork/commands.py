"""How commands reach the master: recorded by a signal handler or a control
socket's client (control.py), then dispatched by the master's one loop.

A signal handler does nothing but record() -- append the command's name and
wake the loop -- so that all the work happens in the loop, between two of
its turns, never in the middle of one.  `kill -HUP` and a control client's
"reload" run the same handle_hup().
"""

import collections
import logging
import signal
import threading

log = logging.getLogger("prefork")

SIGNALS = {
    signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGQUIT: "quit",
    signal.SIGHUP: "hup", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou",
    signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2", signal.SIGCHLD: "chld",
}


class CommandQueue:
    """The master's pending commands, by name, in the order they came.

    wake: called after each record(), to start the loop's next turn at once
    (it must be safe in a signal handler).
    """

    def __init__(self, wake):
        self._wake = wake
        self._pending = collections.deque()
        self._saved_handlers = {}

    def install_signals(self):
        """Record SIGNALS from now on (only the main thread may handle signals)."""
        if threading.current_thread() is not threading.main_thread():
            log.info("master not in the main thread: no signal handling")
            return
        for sig in SIGNALS:
            self._saved_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signals(self):
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    def _on_signal(self, signum, frame):
        self.record(SIGNALS[signum])

    def record(self, name, *args):
        """Queue a command (and its arguments) and wake the loop: all a signal
        handler does."""
        if name != "chld" or ("chld",) not in self._pending:  # one is enough
            self._pending.append((name, *args))
        self._wake()

    def dispatch(self, target):
        """Run target.handle_<name>(*args) for each command recorded, oldest first."""
        while self._pending:
            name, *args = self._pending.popleft()
            getattr(target, "handle_" + name)(*args)
