"""The lab's two exceptions.

Unavailable: the lab cannot run on this machine (not root, no network
namespaces, no HAProxy): its message is one line, for a person or a skip.
LabError: something the lab did or waited for went wrong (a timeout, a
command that failed); its message says what, and may end with log tails.
"""


class Unavailable(Exception):
    """The lab cannot run here; str() is one line saying why."""


class LabError(Exception):
    """A step of the lab failed."""
