"""Where the docs' examples listen and connect.

HOST and PORT come from --host/--port, else from the environment variables of
those names, else the docs' "localhost" and 9999; --port 0 picks a free port.
"""

import argparse
import os


def _parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=os.environ.get("HOST", "localhost"))
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", 9999))
    return parser


def server_address(description):
    """(HOST, PORT) for a server."""
    args = _parser(description).parse_args()
    return args.host, args.port


def client_address_and_message(description):
    """(HOST, PORT, the words to send joined by spaces) for a client."""
    parser = _parser(description)
    parser.add_argument("words", nargs="*")
    args = parser.parse_args()
    return args.host, args.port, " ".join(args.words)


def announce(server):
    """Say where the server listens: users and tests wait for this line."""
    print("serving on {}:{}".format(*server.server_address), flush=True)
