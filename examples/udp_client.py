"""The socketserver docs' UDP client: sends its arguments, prints the reply.

    python examples/udp_client.py [--host HOST] [--port PORT] hello world with UDP

HOST and PORT come from the options, else from the environment variables of
those names, else the docs' "localhost" and 9999.  Talks to
udp_uppercase_server.py.
"""

import argparse
import os
import socket

parser = argparse.ArgumentParser(description="Send words to the upper-casing UDP server.")
parser.add_argument("--host", default=os.environ.get("HOST", "localhost"))
parser.add_argument("--port", type=int, default=os.environ.get("PORT", 9999))
parser.add_argument("words", nargs="*")
args = parser.parse_args()
HOST, PORT = args.host, args.port
data = " ".join(args.words)

# SOCK_DGRAM is the socket type to use for UDP sockets
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

# As you can see, there is no connect() call; UDP has no connections.
# Instead, data is directly sent to the recipient via sendto().
sock.sendto(bytes(data + "\n", "utf-8"), (HOST, PORT))
received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
