"""One contender's server process: started, waited for, measured, stopped, reaped."""

import ctypes
import signal
import subprocess
import time

import psutil

MIB = 1024 * 1024
PR_SET_PDEATHSIG = 1


class ServerDied(RuntimeError):
    """The server exited or never answered; the message ends with its log."""


def _die_with_parent():
    """In the child before exec: TERM it if the bench itself dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """A server started in its own session (Ctrl-C is the bench's to handle).

    Use as a context manager: leaving it stops the whole process tree,
    whatever happened inside.
    """

    def __init__(self, argv, env, log_path, stop_signal=signal.SIGTERM):
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.proc = None
        self._known = {}   # pid -> psutil.Process of every process seen in the tree

    def __enter__(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait_ready(self, probe, timeout=20.0):
        """Call probe() (one real request) until it succeeds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerDied(f"exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                probe()
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise ServerDied(f"not answering after {timeout}s: {error}\n"
                                     f"{self.log_tail()}") from error
                time.sleep(0.05)

    def log_tail(self, lines=20):
        with open(self.log_path, "rb") as log:
            return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")

    # -- the tree's figures -------------------------------------------------

    def tree(self):
        """The server's processes now: the root first, then every descendant."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return []
        for proc in procs:
            self._known.setdefault(proc.pid, proc)
        return procs

    def cpu_seconds(self):
        """User + system CPU of the whole tree, exited and reaped children included."""
        total = 0.0
        for proc in self.tree():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue  # gone since tree(): its time is now its parent's children_*
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def memory(self, pooled):
        """USS and PSS (MiB) per worker (mean) and in total for the tree.

        Workers are the root's children when pooled, else the root itself.
        """
        procs = self.tree()
        if not procs:
            return {}
        try:
            worker_pids = {p.pid for p in procs[0].children()} if pooled else {procs[0].pid}
        except psutil.Error:
            return {}
        totals, workers = {"uss": 0, "pss": 0}, []
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            totals["uss"] += info.uss
            totals["pss"] += info.pss
            if proc.pid in worker_pids:
                workers.append(info)
        count = max(1, len(workers))
        return {"uss_worker": sum(w.uss for w in workers) / count / MIB,
                "pss_worker": sum(w.pss for w in workers) / count / MIB,
                "uss_total": totals["uss"] / MIB, "pss_total": totals["pss"] / MIB,
                "processes": len(procs)}

    # -- stopping -----------------------------------------------------------

    def stop(self, timeout=10.0):
        """Signal the root, reap it; then kill, by pid, whatever of the tree is left."""
        if self.proc is None:
            return
        self.tree()  # remember the descendants before they are orphaned
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = [p for pid, p in self._known.items() if pid != self.proc.pid and p.is_running()]
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=timeout)
        self.proc = None
