"""Spare-based scaling: how many workers to add or retire, from how many are idle.

The policy is Apache prefork's (MinSpareServers/MaxSpareServers) and uWSGI's
"cheaper" idea: keep between spare_min and spare_max workers idle, so that a
new client finds a free worker at once, without holding a pool sized for the
peak.  The master calls decide(idle, total) once per scaling interval (1 s):

* too few idle (idle < spare_min): add workers -- at least what is missing,
  and `step` if more, where step starts at 1 and doubles each interval the
  pool is still short, up to max_step.  A short spike costs one or two forks;
  a sustained load step is met within a few intervals (1, 2, 4, 8, ... as
  Apache's idle_spawn_rate up to MAX_SPAWN_RATE 32), without a fork storm
  each time one client too many arrives.  Once no longer short, step is 1 again.
* too many idle (idle > spare_max): retire ONE idle worker per interval, so a
  lull does not tear down the pool that the next burst will need again.
* never fewer than min_workers, never more than max_workers: adds are capped
  at max_workers - total, and a pool below min_workers is topped up at once.

idle should count the workers still booting as idle (as Apache does: one
forked an interval ago and still booting will soon serve; counting it busy
would fork more and swamp the machine further).  Pure: no I/O, no clock.
"""


class SpareScaler:
    """decide(idle, total) -> n > 0: add n workers; -1: retire one idle; 0: nothing."""

    def __init__(self, min_workers, max_workers, spare_min, spare_max, max_step=32):
        given = {"min_workers": min_workers, "max_workers": max_workers,
                 "spare_min": spare_min, "spare_max": spare_max, "max_step": max_step}
        for name, value in given.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        for low, high in (("min_workers", "max_workers"), ("spare_min", "spare_max"),
                          ("spare_min", "max_workers")):
            if given[low] > given[high]:
                raise ValueError(f"{low} ({given[low]}) must not exceed {high} ({given[high]})")
        self.min_workers, self.max_workers = min_workers, max_workers
        self.spare_min, self.spare_max, self.max_step = spare_min, spare_max, max_step
        self.step = 1   # workers the next short interval adds (at least), doubling

    def decide(self, idle, total):
        """idle: the wanted workers idle or booting; total: the wanted workers."""
        if total < self.min_workers:
            return min(self.min_workers, self.max_workers) - total
        if idle < self.spare_min:
            add = min(max(self.step, self.spare_min - idle), self.max_workers - total)
            # At max_workers there is nothing to add: start over at 1 (as Apache).
            self.step = min(2 * self.step, self.max_step) if add > 0 else 1
            return max(0, add)
        self.step = 1
        if idle > self.spare_max and total > self.min_workers:
            return -1
        return 0

    def describe(self):
        """The policy in one line, for the master's log."""
        return (f"Spare scaling: {self.min_workers}-{self.max_workers} workers, "
                f"{self.spare_min}-{self.spare_max} idle, adding up to {self.max_step} "
                f"per interval")
