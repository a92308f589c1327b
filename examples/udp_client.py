"""The socketserver docs' UDP client: sends its arguments, prints the reply.

    python examples/udp_client.py [--host HOST] [--port PORT] hello world with UDP

HOST and PORT come from the options, else from the environment variables of
those names, else the docs' "localhost" and 9999.  Talks to
udp_uppercase_server.py.
"""

import socket

from docs_address import client_address_and_message

HOST, PORT, data = client_address_and_message("Send words to the upper-casing UDP server.")

# SOCK_DGRAM is the socket type to use for UDP sockets
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

# As you can see, there is no connect() call; UDP has no connections.
# Instead, data is directly sent to the recipient via sendto().
sock.sendto(bytes(data + "\n", "utf-8"), (HOST, PORT))
received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
