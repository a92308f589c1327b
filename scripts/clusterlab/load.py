"""Bounded HTTP load through HAProxy, from the root namespace; every outcome kept.

Contract: Load(address, threads, rate, duration).start() runs `threads`
client threads that send GET /?sleep=S to HAProxy, each on a connection of
its own, together at most `rate` requests a second, and stop by themselves
after `duration` seconds or rate x duration requests, whichever comes
first -- or at stop().  Each request is one Outcome: when it was sent and
done, the host and version that answered, or why it failed:
    connect error   HAProxy refused or could not be reached
    reset           the connection was reset
    closed          closed without a complete answer
    timeout         no answer within TIMEOUT seconds
    HTTP 5xx        HAProxy's own error (e.g. 503: no host; 502: a host failed it)
    wrong body      a 200 whose body is not a lab host's answer
- between(start, end): the outcomes of the requests sent in [start, end).
- settle(end): until every request sent before `end` is done.
- wait_answer(host, version, since, count): until `host` has answered with
  `version` `count` requests sent after `since` (LabError after a timeout, or
  if the load ended).
"""

import http.client
import socket
import threading
import time
from dataclasses import dataclass

from . import app, procs
from .errors import LabError

TIMEOUT = 5  # seconds a client waits for connect() and for each read


@dataclass
class Outcome:
    sent: float              # time.monotonic() when the request was sent
    done: float
    host: str = None         # who answered (None if it failed)
    version: str = None
    failure: str = None      # why it failed (None: answered by a lab host)


def get(address, path):
    """GET path on a new connection to address: (host, version) of a lab
    host's answer, or the failure's reason (a str)."""
    connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except ConnectionRefusedError:
        return "connect error"
    except ConnectionResetError:
        return "reset"
    except (http.client.RemoteDisconnected, http.client.IncompleteRead, BrokenPipeError):
        return "closed"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__
    finally:
        connection.close()
    if response.status != 200:
        return f"HTTP {response.status}"
    return app.parse(body) or "wrong body"


class Load:
    """The clients (see the module's docstring)."""

    def __init__(self, address, threads=8, rate=200.0, duration=120.0, sleep=0.02):
        self.address = address
        self.threads = threads
        self.rate = rate
        self.duration = duration
        self.limit = int(rate * duration)
        self.path = f"/?sleep={sleep:g}"
        self.outcomes = []
        self.sent = 0
        self.started = None
        self._in_flight = {}  # client number -> when its request was sent
        self._answered = threading.Condition()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), name=f"client{n}",
                                          daemon=True) for n in range(threads)]

    def start(self):
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(2 * TIMEOUT)
        with self._answered:
            self._answered.notify_all()

    @property
    def running(self):
        return any(thread.is_alive() for thread in self._threads)

    def _client(self, number):
        # Client n sends its i-th request at started + (n + i * threads) / rate:
        # together, at most `rate` a second however quick the answers are.
        for i in range(self.limit):
            due = self.started + (number + i * self.threads) / self.rate
            if due - self.started > self.duration or self._stopping.wait(
                    max(0.0, due - time.monotonic())):
                break
            with self._answered:
                if self.sent >= self.limit:
                    break
                self.sent += 1
                sent = self._in_flight[number] = time.monotonic()
            result = get(self.address, self.path)
            outcome = Outcome(sent, time.monotonic())
            if isinstance(result, str):
                outcome.failure = result
            else:
                outcome.host, outcome.version = result
            with self._answered:
                self.outcomes.append(outcome)
                del self._in_flight[number]
                self._answered.notify_all()
        with self._answered:
            self._answered.notify_all()  # a waiter learns that the load ended

    def between(self, start, end):
        """The outcomes of the requests sent in [start, end) and done by now."""
        with self._answered:
            return [o for o in self.outcomes if start <= o.sent < end]

    def settle(self, end, timeout=2 * TIMEOUT):
        """Wait until every request sent before `end` is done (its outcome kept)."""
        def done():
            with self._answered:
                return not any(sent < end for sent in self._in_flight.values())
        procs.wait(done, timeout, "the requests in flight to end")

    def wait_answer(self, host, version, since, count=1, timeout=20):
        """Wait until `host` has answered `count` requests sent after `since`
        with `version`."""
        deadline = time.monotonic() + timeout
        checked, found = 0, 0  # each outcome is looked at once
        with self._answered:
            while True:
                found += sum(1 for o in self.outcomes[checked:]
                             if (o.host, o.version) == (host, version) and o.sent >= since)
                checked = len(self.outcomes)
                if found >= count:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    why = "timed out after %gs" % timeout if self.running else \
                        "the load ended"
                    raise LabError(f"{why} before {host} answered {count} requests "
                                   f"with {version} ({found} so far)")
                self._answered.wait(min(left, 0.5))
