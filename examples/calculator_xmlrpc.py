"""A server class (xmlrpc.server's), run by the prefork command:

    prefork -b 127.0.0.1:8001 -w 2 calculator_xmlrpc:Calculator

The command adds PreforkMixIn to the class and constructs it as socketserver
does; its handler stays the class's own.  From Python:

    xmlrpc.client.ServerProxy("http://127.0.0.1:8001/").add(2, 3)   # 5
"""

from xmlrpc.server import SimpleXMLRPCServer


class Calculator(SimpleXMLRPCServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, logRequests=False, **kwargs)
        self.register_function(lambda a, b: a + b, "add")
        self.register_function(lambda a, b: a * b, "multiply")
