"""A socketserver request handler, run by the prefork command:

    prefork -b 127.0.0.1:9000 -w 4 echo_handler:Echo

Each line a client sends comes back, after the number of the worker that
answered.  The command builds the server (a TCPServer here; -k threading or
-k forking for a thread or a child per connection).
"""

import socketserver


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        worker = self.server.current_worker.number
        for line in self.rfile:
            self.wfile.write(f"worker {worker}: ".encode() + line)
