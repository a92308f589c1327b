"""The socketserver docs' UDPServer example, on prefork.

Run the server, then the client from another terminal:

    python examples/udp_uppercase_server.py [--host HOST] [--port PORT]
    python examples/udp_client.py [--port PORT] hello world with UDP

HOST and PORT come from the options, else from the environment variables of
those names, else the docs' "localhost" and 9999; --port 0 picks a free port.
Once bound, the server prints "serving on ADDRESS:PORT"; Ctrl-C stops it.
prefork must be importable: `pip install -e .`, or PYTHONPATH=. in the repository.
"""

import prefork as socketserver
from docs_address import announce, server_address


class MyUDPHandler(socketserver.BaseRequestHandler):
    """
    This class works similar to the TCP handler class, except that
    self.request consists of a pair of data and client socket, and since
    there is no connection the client address must be given explicitly
    when sending data back via sendto().
    """

    def handle(self):
        data = self.request[0].strip()
        socket = self.request[1]
        print("{} wrote:".format(self.client_address[0]))
        print(data)
        socket.sendto(data.upper(), self.client_address)


if __name__ == "__main__":
    HOST, PORT = server_address("Upper-casing UDP server.")

    with socketserver.UDPServer((HOST, PORT), MyUDPHandler) as server:
        announce(server)
        server.serve_forever()
