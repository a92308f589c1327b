"""A datagram handler, run by the prefork command on a UDP port:

    prefork -b udp://127.0.0.1:9001 -w 2 udp_upper:Upper

Each datagram comes back upper-cased.
"""

import socketserver


class Upper(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read().upper())
