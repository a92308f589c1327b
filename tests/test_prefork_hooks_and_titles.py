"""The prefork master's hooks (gunicorn's names: where and when each runs) and
the master's and workers' process titles, over a life: start, HUP reload, TTIN, TERM."""

import re
import signal

import psutil

from support import start_app, wait_for


class Hooks:
    """The HOOK lines a traced server printed: (name, pid, arguments)."""

    def __init__(self, process):
        self.process = process

    def calls(self, name=None):
        found = []
        for line in "".join(self.process.lines).splitlines():
            match = re.match(r"HOOK (\w+) (\d+) ?(.*)", line)
            if match and name in (None, match.group(1)):
                found.append((match.group(1), int(match.group(2)), match.group(3).strip()))
        return found

    def wait(self, name, count=1):
        """Read output until `name` has been called `count` times."""
        if len(self.calls(name)) < count:
            self.process.readline_until(lambda _: len(self.calls(name)) >= count)
        return self.calls(name)


def titles(pid):
    """The process titles of the master and of its workers, by number."""
    master = psutil.Process(pid)
    return (" ".join(master.cmdline()),
            sorted(" ".join(child.cmdline()) for child in master.children()))


def test_hooks_run_where_and_when_gunicorn_runs_them(spawn):
    process, (_, port) = start_app(spawn, "--set", "workers=2", "--trace-hooks")
    master = process.pid
    hooks = Hooks(process)
    booted = hooks.wait("post_worker_init", 2)

    # Start: on_starting before any fork; pre_fork in the master, post_fork
    # and post_worker_init in each worker.
    names = [name for name, _, _ in hooks.calls()]
    assert names.index("on_starting") < names.index("pre_fork")
    assert all(pid == master for _, pid, _ in hooks.calls("pre_fork"))
    worker_pids = {pid for _, pid, _ in booted}
    assert master not in worker_pids and len(worker_pids) == 2
    assert {pid for _, pid, _ in hooks.calls("post_fork")} == worker_pids
    assert all(f"pid={pid} " in info for _, pid, info in booted)  # the worker knows its pid

    master_title, worker_titles = titles(master)
    assert master_title.startswith(f"prefork master TestServer 127.0.0.1:{port}")
    assert [t.split(" TestServer")[0] for t in worker_titles] == [
        "prefork worker 1 [gen 1]", "prefork worker 2 [gen 1]"]

    # HUP: on_reload in the master, a new generation, the old one leaves.
    psutil.Process(master).send_signal(signal.SIGHUP)
    assert hooks.wait("on_reload")[0][1] == master
    hooks.wait("post_worker_init", 4)
    exits = hooks.wait("child_exit", 2)
    assert all(pid == master for _, pid, _ in exits)
    assert {pid for _, pid, _ in hooks.wait("worker_exit", 2)} == worker_pids
    wait_for(lambda: all("[gen 2]" in t for t in titles(master)[1]),
             message="only generation 2 left")

    # TTIN: nworkers_changed(new, old) in the master.
    psutil.Process(master).send_signal(signal.SIGTTIN)
    assert hooks.wait("nworkers_changed")[0][1:] == (master, "3 2")

    # TERM: on_exit in the master, once every worker has stopped.
    assert process.stop(signal.SIGTERM) == 0
    process.output()
    assert hooks.calls("on_exit") == [("on_exit", master, "")]
    assert names_in_order(hooks, "child_exit", "on_exit")
    # worker_stopping in each worker as its stop began (the reload's and TERM's),
    # before its worker_exit.
    stopped = [pid for _, pid, _ in hooks.calls("worker_stopping")]
    exited = [pid for _, pid, _ in hooks.calls("worker_exit")]
    assert sorted(stopped) == sorted(exited) and len(exited) == 5, hooks.calls()
    names = [(name, pid) for name, pid, _ in hooks.calls()]
    assert all(names.index(("worker_stopping", pid)) < names.index(("worker_exit", pid))
               for pid in exited)


def names_in_order(hooks, first, last):
    names = [name for name, _, _ in hooks.calls()]
    return max(i for i, n in enumerate(names) if n == first) < names.index(last)
