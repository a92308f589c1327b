"""./scripts/cluster: prefork hosts behind HAProxy, rolled host by host under
load -- drain + TERM + new version, HUP reload, USR2 upgrade, SIGKILL --
each step printed as it happens, then a table of the figures.  As root: it
makes network namespaces, veth pairs, and installs HAProxy when missing.

Exit status: 0 every target met; 1 a target missed or a step failed; 2 the
lab cannot run here (one line says why).
"""

import argparse
import signal
import sys
import time

from .errors import LabError, Unavailable
from .lab import Lab
from .report import table
from .roll import Roll, targets


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="./scripts/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, choices=(2, 3), default=3,
                        help="prefork hosts behind HAProxy (default 3)")
    parser.add_argument("--rate", type=float, default=200.0, metavar="R",
                        help="at most R requests a second, all clients together (default 200)")
    parser.add_argument("--duration", type=float, default=120.0, metavar="S",
                        help="the load stops after S seconds at most (default 120): "
                             "the roll fails if it needs longer")
    parser.add_argument("--clients", type=int, default=8, metavar="N",
                        help="client threads (default 8)")
    parser.add_argument("--drain-delay", type=float, default=1.0, metavar="S",
                        help="the hosts' --drain-delay (default 1; 0 to see what it prevents)")
    return parser.parse_args(argv)


def _stop_on_term(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_term)
    started = time.monotonic()
    try:
        with Lab(hosts=args.hosts, threads=args.clients, rate=args.rate,
                 duration=args.duration, drain_delay=args.drain_delay,
                 say=lambda text: print(text, flush=True)) as lab:
            figures = Roll(lab).run()
            names = [host.name for host in lab.hosts]
    except Unavailable as error:
        print(f"cluster: cannot run here: {error}", file=sys.stderr)
        return 2
    except LabError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cluster: interrupted; everything it made is removed", file=sys.stderr)
        return 1
    print()
    print(table(figures, names))
    missed = targets(figures, args.clients)
    print()
    print(f"{time.monotonic() - started:.1f} s in all; "
          + ("every target met" if not missed else "targets missed:\n  " + "\n  ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
