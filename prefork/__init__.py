"""prefork: the socketserver framework, re-implemented, with a pre-forking master.

``import prefork as socketserver`` is a drop-in for the standard library's
module; the prefork layer adds PreforkMixIn on top of it.
"""

from .handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .master import ExitStatus, WorkerBootError
from .mixins import (
    ForkingMixIn,
    ForkingTCPServer,
    ForkingUDPServer,
    ForkingUnixDatagramServer,
    ForkingUnixStreamServer,
    ThreadingMixIn,
    ThreadingTCPServer,
    ThreadingUDPServer,
    ThreadingUnixDatagramServer,
    ThreadingUnixStreamServer,
)
from .preforkmixin import PreforkMixIn
from .server import BaseServer, TCPServer, UDPServer, UnixDatagramServer, UnixStreamServer


class PreforkTCPServer(PreforkMixIn, TCPServer): pass
class PreforkUDPServer(PreforkMixIn, UDPServer): pass
class PreforkUnixStreamServer(PreforkMixIn, UnixStreamServer): pass
class PreforkUnixDatagramServer(PreforkMixIn, UnixDatagramServer): pass


__version__ = "0.1.0"

__all__ = [
    # the socketserver framework
    "BaseServer", "TCPServer", "UDPServer", "UnixStreamServer", "UnixDatagramServer",
    "ForkingMixIn", "ThreadingMixIn",
    "ForkingTCPServer", "ForkingUDPServer",
    "ForkingUnixStreamServer", "ForkingUnixDatagramServer",
    "ThreadingTCPServer", "ThreadingUDPServer",
    "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer",
    "BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler",
    # the prefork layer
    "PreforkMixIn", "WorkerBootError", "ExitStatus",
    "PreforkTCPServer", "PreforkUDPServer", "PreforkUnixStreamServer", "PreforkUnixDatagramServer",
]
