"""The socketserver docs' TCPServer example with StreamRequestHandler, on prefork.

Run the server, then the client from another terminal:

    python examples/tcp_uppercase_stream_server.py [--host HOST] [--port PORT]
    python examples/tcp_client.py [--port PORT] hello world with TCP

HOST and PORT come from the options, else from the environment variables of
those names, else the docs' "localhost" and 9999; --port 0 picks a free port.
Once bound, the server prints "serving on ADDRESS:PORT"; Ctrl-C stops it.
prefork must be importable: `pip install -e .`, or PYTHONPATH=. in the repository.
"""

import prefork as socketserver
from docs_address import announce, server_address


class MyTCPHandler(socketserver.StreamRequestHandler):

    def handle(self):
        # self.rfile is a file-like object created by the handler;
        # we can now use e.g. readline() instead of raw recv() calls
        self.data = self.rfile.readline().strip()
        print("{} wrote:".format(self.client_address[0]))
        print(self.data)
        # Likewise, self.wfile is a file-like object used to write back
        # to the client
        self.wfile.write(self.data.upper())


if __name__ == "__main__":
    HOST, PORT = server_address("Upper-casing TCP server (streams).")

    # Create the server, binding to localhost on port 9999
    with socketserver.TCPServer((HOST, PORT), MyTCPHandler) as server:
        announce(server)
        # Activate the server; this will keep running until you
        # interrupt the program with Ctrl-C
        server.serve_forever()
