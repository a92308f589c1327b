"""Spare-based scaling (issue 10, point 5): prefork.scaling.SpareScaler, the
policy the master applies once per second, and the `prefork` command that
grows and shrinks its pool with it.

1. SpareScaler alone (pure, fast): when too few workers are idle it adds 1, 2,
   4, 8, ... (at least what is missing) up to max_step and never past
   max_workers, starting over at 1 once no longer short; when too many are
   idle it retires one per call, never below min_workers; between the spares
   it does nothing; bad settings are refused with a message naming them.
2. The real command (`-k sync --min-workers 2 --max-workers 12 --spare-min 2
   --spare-max 4`, an app of this file's own that holds a connection busy):
   busy connections make the master's children grow to busy + spare_min,
   never above max_workers; released, the pool shrinks one worker per
   interval until spare_max are idle, never below min_workers; each change
   is logged ("Number of workers: N -> M (scaling up: ...)", "... (scaling down: ...)").
"""

import re
import threading
import time

import psutil
import pytest

from prefork.scaling import SpareScaler
from support import (
    assert_one_line_error, connect, live_children, recv_line, run_prefork, start_prefork,
    terminate, wait_for, wait_log, write_slow_app)

# -- helpers ----------------------------------------------------------------------------


class WorkerCounts:
    """The number of live children of process `pid`, sampled every 20 ms in a
    thread until stop(): samples is [(time.monotonic(), count)]."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stopping.is_set():
            try:
                self.samples.append((time.monotonic(), len(live_children(self.pid))))
            except psutil.Error:  # the master is gone: nothing more to count
                return
            self._stopping.wait(0.02)

    def now(self):
        return len(live_children(self.pid))

    def wait(self, predicate, timeout, message):
        """Wait until predicate(the count now) holds, and until the samples
        have seen it too (so that a change seen now is not sampled later)."""
        wait_for(lambda: predicate(self.now()), timeout=timeout, message=message)
        wait_for(lambda: self.samples and predicate(self.samples[-1][1]), timeout=timeout,
                 message=f"{message}, sampled")

    def since(self, start):
        """The counts sampled from time `start` (monotonic) on."""
        return [count for at, count in self.samples if at >= start]

    def steps(self, start):
        """[(when, change)] of every change of the count sampled from `start` on."""
        return [(at, b - a) for (_, a), (at, b) in zip(self.samples, self.samples[1:])
                if at >= start and b != a]

    def stop(self):
        self._stopping.set()
        self._thread.join(5)


def observe(seconds):
    """Let `seconds` pass while a WorkerCounts samples: the way to see that
    something does NOT happen (no worker past the ceiling, none retired below
    the floor) is to watch for longer than the master's scaling interval (1 s)."""
    time.sleep(seconds)


# -- 1. the policy alone ---------------------------------------------------------------

def grow(scaler, total, idle=0, times=8):
    """What decide() answers `times` intervals in a row while `idle` stay idle,
    the pool growing by each answer: [add, ...]."""
    answers = []
    for _ in range(times):
        add = scaler.decide(idle, total)
        answers.append(add)
        total += max(add, 0)
    return answers


@pytest.mark.timeout(5)
def test_short_of_idle_workers_adds_a_doubling_step_up_to_max_step():
    assert grow(SpareScaler(1, 1000, 1, 5), total=1) == [1, 2, 4, 8, 16, 32, 32, 32]
    assert grow(SpareScaler(1, 1000, 1, 5, max_step=4), total=1, times=5) == [1, 2, 4, 4, 4]


@pytest.mark.timeout(5)
def test_adds_never_pass_max_workers():
    # 1 + 1 + 2 + 4 = 8: the next step (8) is cut to the 2 left, then nothing.
    assert grow(SpareScaler(1, 10, 1, 5), total=1, times=6) == [1, 2, 4, 2, 0, 0]


@pytest.mark.timeout(5)
def test_adds_at_least_the_idle_workers_missing():
    scaler = SpareScaler(2, 48, 5, 8)
    assert scaler.decide(0, 2) == 5      # 5 missing, more than the step (1)
    assert scaler.decide(3, 7) == 2      # 2 missing: the step (now 2)
    assert scaler.decide(4, 9) == 4      # 1 missing, but the step has doubled to 4


@pytest.mark.timeout(5)
def test_the_step_starts_over_at_one_once_no_longer_short():
    scaler = SpareScaler(1, 100, 1, 5)
    assert grow(scaler, total=1, times=3) == [1, 2, 4]
    assert scaler.decide(1, 8) == 0      # spare_min idle: enough
    assert grow(scaler, total=8, times=3) == [1, 2, 4]


@pytest.mark.timeout(5)
def test_the_step_starts_over_at_one_after_max_workers_stopped_it():
    scaler = SpareScaler(1, 8, 1, 5)
    assert grow(scaler, total=1, times=5) == [1, 2, 4, 0, 0]   # 8: the ceiling
    assert scaler.decide(0, 7) == 1      # one left (TTOU): the step is 1 again, not 8


@pytest.mark.timeout(5)
def test_too_many_idle_retires_one_per_call_down_to_min_workers():
    scaler = SpareScaler(3, 12, 1, 2)
    answers = []
    total = 6
    for _ in range(5):                   # every worker idle: 6 > spare_max 2
        answer = scaler.decide(total, total)
        answers.append(answer)
        total += answer
    assert answers == [-1, -1, -1, 0, 0]
    assert total == 3                    # min_workers, though 3 idle > spare_max


@pytest.mark.timeout(5)
def test_between_the_spares_nothing_changes():
    scaler = SpareScaler(2, 12, 2, 4)
    assert [scaler.decide(idle, 10) for idle in (2, 3, 4)] == [0, 0, 0]
    assert scaler.decide(1, 10) == 1 and scaler.decide(5, 10) == -1   # just outside


@pytest.mark.timeout(5)
def test_a_pool_below_min_workers_is_topped_up_at_once():
    assert SpareScaler(4, 12, 1, 2).decide(1, 1) == 3


@pytest.mark.timeout(5)
@pytest.mark.parametrize("args, message", [
    ((5, 3, 1, 2), "min_workers (5) must not exceed max_workers (3)"),
    ((1, 12, 5, 3), "spare_min (5) must not exceed spare_max (3)"),
    ((1, 4, 5, 6), "spare_min (5) must not exceed max_workers (4)"),
    ((0, 12, 1, 2), "min_workers must be an integer >= 1, not 0"),
    ((1, 12, 1, 0), "spare_max must be an integer >= 1, not 0"),
    ((1, 12, 0, 2), "spare_min must be an integer >= 1, not 0"),
    ((1, 12, 1, 2, 0), "max_step must be an integer >= 1, not 0"),
    ((1, 12, 1.5, 2), "spare_min must be an integer >= 1, not 1.5"),
    ((True, 12, 1, 2), "min_workers must be an integer >= 1, not True"),
])
def test_bad_settings_are_refused_naming_them(args, message):
    with pytest.raises(ValueError) as error:
        SpareScaler(*args)
    assert str(error.value) == message


@pytest.mark.timeout(5)
def test_describe_tells_the_policy():
    assert SpareScaler(2, 12, 2, 4).describe() == \
        "Spare scaling: 2-12 workers, 2-4 idle, adding up to 32 per interval"


# -- 2. the real command ---------------------------------------------------------------

SCALING = ("--min-workers", "2", "--max-workers", "12", "--spare-min", "2", "--spare-max", "4",
           "-k", "sync")


def start_scaling(spawn, tmp_path, *args, workers=2):
    """The command with support.SLOW_APP (written in tmp_path, run from there)
    and `args`; (process, address) once its workers have booted.  Its default
    control socket goes to tmp_path too ($XDG_RUNTIME_DIR), out of the way
    of any other master."""
    app = write_slow_app(tmp_path)
    process, addresses = start_prefork(spawn, *args, app, workers=workers,
                                       cwd=str(tmp_path),
                                       env={"XDG_RUNTIME_DIR": str(tmp_path)})
    return process, addresses[0]


def hold(address, count):
    """`count` connections that sent "hold" (answered once a worker takes them)."""
    clients = [connect(address, timeout=20) for _ in range(count)]
    for client in clients:
        client.sendall(b"hold\n")
    return clients


def wait_held(clients, count):
    """Wait until `count` of clients are held by a worker (read their "holding")."""
    for client in clients[:count]:
        assert recv_line(client) == b"holding\n"


def grown_under_load(spawn, tmp_path):
    """Start the command with SCALING and hold 8 workers busy; return (process,
    counts, clients) once every hold is taken and the pool has grown to at
    least 8 busy + spare_min 2 = 10 workers, within 6 s of the first hold."""
    process, address = start_scaling(spawn, tmp_path, *SCALING)
    counts = WorkerCounts(process.pid)
    began = time.monotonic()
    clients = hold(address, 8)
    # 2 workers, none idle: +2 (the 2 missing), +2, +4: 10 after ~3 intervals.
    wait_held(clients, 8)
    counts.wait(lambda n: n >= 10, timeout=max(0.1, began + 6 - time.monotonic()),
                message="8 busy + 2 idle workers, 6 s after the first hold")
    return process, counts, clients


def release(clients):
    """Close the held connections: their handlers see EOF and their workers idle."""
    for client in clients:
        client.close()


@pytest.mark.timeout(40)
def test_busy_workers_make_the_pool_grow_to_busy_plus_spare_min(spawn, tmp_path):
    process, counts, clients = grown_under_load(spawn, tmp_path)
    settled = time.monotonic()
    observe(1.5)                 # 2 idle again: no more growth
    counts.stop()
    assert max(count for _, count in counts.samples) <= 12, counts.samples
    assert all(10 <= n <= 12 for n in counts.since(settled)), counts.since(settled)
    release(clients)
    ups = [line for line in terminate(process).splitlines() if "(scaling up:" in line]
    # Doubling: 8 workers more in at most 4 steps (one at a time would take 8).
    assert 1 <= len(ups) <= 4, ups


@pytest.mark.timeout(40)
def test_released_workers_retire_one_per_interval_down_to_spare_max_idle(spawn, tmp_path):
    process, counts, clients = grown_under_load(spawn, tmp_path)
    grown = counts.now()
    released = time.monotonic()
    release(clients)             # 10 idle > spare_max 4
    counts.wait(lambda n: n <= 4, timeout=15, message="down to 4 workers (4 idle)")
    reached = time.monotonic()
    observe(1.5)                 # 4 idle is spare_max: one more interval changes nothing
    counts.stop()
    assert set(counts.since(reached)) == {4}, counts.since(reached)
    steps = counts.steps(released)
    assert {change for _, change in steps} == {-1}, steps      # one worker at a time
    times = [at for at, _ in steps]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(steps) == grown - 4 and min(gaps) > 0.5, gaps   # about one per second
    downs = [line for line in terminate(process).splitlines() if "(scaling down:" in line]
    assert len(downs) == grown - 4, downs                      # a log line for each


@pytest.mark.timeout(40)
def test_the_pool_never_grows_past_max_workers(spawn, tmp_path):
    process, address = start_scaling(spawn, tmp_path, *SCALING)
    counts = WorkerCounts(process.pid)
    clients = hold(address, 14)  # more than max_workers: 2 stay queued
    wait_held(clients, 12)
    counts.wait(lambda n: n >= 12, timeout=10, message="12 workers")
    observe(2.5)                 # still short of idle workers, two more intervals
    counts.stop()
    assert max(count for _, count in counts.samples) == 12
    release(clients)


@pytest.mark.timeout(30)
def test_idle_workers_retire_no_further_than_min_workers(spawn, tmp_path):
    process, _ = start_scaling(spawn, tmp_path, "--min-workers", "3", "--max-workers", "8",
                               "--spare-min", "1", "--spare-max", "1", "-k", "sync", workers=4)
    counts = WorkerCounts(process.pid)
    wait_log(process, "(scaling down:")          # 4 idle > spare_max 1: one retires
    counts.wait(lambda n: n == 3, timeout=5, message="3 workers")
    floor = time.monotonic()
    observe(2.5)                 # 3 idle > spare_max still, but 3 is min_workers
    counts.stop()
    assert set(counts.since(floor)) == {3}, counts.since(floor)


@pytest.mark.timeout(20)
def test_the_command_refuses_spare_min_above_spare_max(tmp_path):
    app = write_slow_app(tmp_path)
    result = run_prefork("-b", "127.0.0.1:0", "--spare-min", "5", "--spare-max", "3",
                         app, cwd=str(tmp_path))
    assert_one_line_error(
        result, re.compile(r".*spare_min \(5\) must not exceed spare_max \(3\).*"))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("given", [("--spare-min", "2"), ("--spare-max", "4")])
def test_the_command_refuses_one_spare_without_the_other(tmp_path, given):
    app = write_slow_app(tmp_path)
    result = run_prefork("-b", "127.0.0.1:0", *given, app, cwd=str(tmp_path))
    # (the wording is open: the line names both settings)
    assert_one_line_error(result, re.compile(r"(?=.*spare_min)(?=.*spare_max).*"))


# support.SLOW_APP itself serves (the integration tests above rely on it): without
# scaling flags, so that it runs before the wiring exists too.
@pytest.mark.timeout(30)
def test_the_slow_app_sleeps_and_holds(spawn, tmp_path):
    process, address = start_scaling(spawn, tmp_path, "-k", "sync")
    with connect(address) as sock:
        began = time.monotonic()
        sock.sendall(b"sleep 0.2\n")
        assert recv_line(sock) == b"ok\n"
        assert time.monotonic() - began >= 0.2
    with connect(address) as sock:
        sock.sendall(b"hold\n")
        assert recv_line(sock) == b"holding\n"
        sock.sendall(b"go\n")
        assert recv_line(sock) == b"ok\n"
    assert len(live_children(process.pid)) == 2
