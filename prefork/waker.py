"""A self-pipe that wakes a server loop blocked in select().

Anything may call ``wake()``: another thread, a signal handler (it is one
non-blocking ``os.write``), or ``signal.set_wakeup_fd(waker.write_fd)``.  The
loop selects on the waker alongside its listening socket and calls ``drain()``
when it becomes readable.
"""

import os


class LoopWaker:
    """The two ends of a non-blocking, close-on-exec pipe, owned by one process."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()  # close-on-exec, as every fd Python opens
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.pid = os.getpid()

    def fileno(self):
        return self.read_fd

    def wake(self):
        """Make the loop's next (or current) select() return at once."""
        try:
            os.write(self.write_fd, b"!")
        except (BlockingIOError, OSError):
            pass  # a full pipe already wakes the loop; a closed one has no loop

    def drain(self):
        """Consume every pending wake-up byte."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1
