"""The socketserver docs' TCP client: sends its arguments, prints the reply.

    python examples/tcp_client.py [--host HOST] [--port PORT] hello world with TCP

HOST and PORT come from the options, else from the environment variables of
those names, else the docs' "localhost" and 9999.  Talks to
tcp_uppercase_server.py or tcp_uppercase_stream_server.py.
"""

import socket

from docs_address import client_address_and_message

HOST, PORT, data = client_address_and_message("Send words to the upper-casing TCP server.")

# Create a socket (SOCK_STREAM means a TCP socket)
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    # Connect to server and send data
    sock.connect((HOST, PORT))
    sock.sendall(bytes(data + "\n", "utf-8"))

    # Receive data from the server and shut down
    received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
