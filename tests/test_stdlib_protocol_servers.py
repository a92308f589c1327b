"""The standard library's protocol servers (http.server, xmlrpc.server,
wsgiref.simple_server), unchanged, on prefork's classes.

http.server, xmlrpc.server and wsgiref.simple_server are written against
socketserver; here their handlers run on prefork's servers and are driven by
the standard library's own clients over real sockets.
"""

import contextlib
import functools
import http.client
import http.server
import json
import os
import socket
import wsgiref.simple_server
import xmlrpc.client
import xmlrpc.server

import pytest

import prefork
from support import CLIENT_TIMEOUT, serving


# -- http.server ----------------------------------------------------------------------

class Server(prefork.ThreadingMixIn, prefork.TCPServer):
    """http.server.ThreadingHTTPServer's threading, on prefork."""

    daemon_threads = True


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """GET says hello to the path; POST echoes its body back."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.reply(f"hello from {self.path}".encode(), "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.reply(body, self.headers["Content-Type"])

    def reply(self, body, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def http_connection(server):
    """Serve, and yield an http.client connection to the server."""
    with serving(server):
        connection = http.client.HTTPConnection(*server.server_address, timeout=CLIENT_TIMEOUT)
        with contextlib.closing(connection):
            yield connection


def fetch(connection, method, path, body=None, headers=None):
    """One request; return the response (already read) and its body."""
    connection.request(method, path, body, headers or {})
    response = connection.getresponse()
    return response, response.read()


def test_http_get_and_post_keep_alive():
    with http_connection(Server(("127.0.0.1", 0), EchoHandler)) as connection:
        response, body = fetch(connection, "GET", "/hello")
        assert (response.status, response.reason) == (200, "OK")
        assert response.version == 11 and not response.will_close
        assert response.getheader("Content-Type") == "text/plain"
        assert response.getheader("Content-Length") == str(len(body))
        assert response.getheader("Server").startswith("BaseHTTP/")
        assert body == b"hello from /hello"
        first_socket = connection.sock

        payload = json.dumps({"numbers": list(range(1000))}).encode()
        response, body = fetch(connection, "POST", "/echo", payload,
                               {"Content-Type": "application/json"})
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert body == payload
        # HTTP/1.1 keep-alive: both requests went over the one connection.
        assert connection.sock is first_socket


@pytest.fixture
def document_root(tmp_path):
    (tmp_path / "hello.txt").write_text("hello, files\n")
    return str(tmp_path)


class FileHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"


def test_http_simple_file_server(document_root):
    handler = functools.partial(FileHandler, directory=document_root)
    with http_connection(Server(("127.0.0.1", 0), handler)) as connection:
        response, body = fetch(connection, "GET", "/hello.txt")
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain"
        assert response.getheader("Content-Length") == str(len(b"hello, files\n"))
        assert response.getheader("Last-Modified")
        assert body == b"hello, files\n"
        first_socket = connection.sock

        response, body = fetch(connection, "GET", "/")
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/html")
        assert b'<a href="hello.txt">hello.txt</a>' in body
        assert connection.sock is first_socket

        response, body = fetch(connection, "GET", "/missing.txt")
        assert (response.status, response.reason) == (404, "File not found")
        assert b"File not found" in body


class UnixEchoHandler(EchoHandler):
    def address_string(self):
        # A Unix-socket peer is unnamed: client_address is '', with no [0] to log.
        return "unix:" + self.server.server_address


def test_http_over_unix_socket(unix_dir, capsys):
    path = os.path.join(unix_dir, "http.sock")
    with serving(prefork.ThreadingUnixStreamServer(path, UnixEchoHandler)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(CLIENT_TIMEOUT)
            client.connect(path)
            client.sendall(b"GET /over-unix HTTP/1.1\r\nHost: localhost\r\n"
                           b"Connection: close\r\n\r\n")
            response = http.client.HTTPResponse(client)
            response.begin()
            assert response.status == 200
            assert response.read() == b"hello from /over-unix"
    # The request was logged, with the handler's address_string().
    assert f'unix:{path} - - ' in capsys.readouterr().err


# -- xmlrpc.server ----------------------------------------------------------------------

class XMLRPCServer(prefork.ThreadingMixIn, prefork.TCPServer,
                   xmlrpc.server.SimpleXMLRPCDispatcher):
    """xmlrpc.server.SimpleXMLRPCServer, threaded, on prefork."""

    allow_reuse_address = True
    _send_traceback_header = False

    def __init__(self, addr, requestHandler=xmlrpc.server.SimpleXMLRPCRequestHandler,
                 logRequests=True, allow_none=False, encoding=None,
                 bind_and_activate=True, use_builtin_types=False):
        self.logRequests = logRequests
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(
            self, allow_none, encoding, use_builtin_types)
        prefork.TCPServer.__init__(self, addr, requestHandler, bind_and_activate)


class TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transport, with a timeout on its connections."""

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = CLIENT_TIMEOUT
        return connection


def add(a, b):
    """Return the sum of a and b."""
    return a + b


def fail():
    raise ValueError("no such luck")


@pytest.fixture
def xmlrpc_proxy():
    server = XMLRPCServer(("127.0.0.1", 0), logRequests=False,
                          allow_none=True, use_builtin_types=True)
    server.register_function(add)
    server.register_function(fail)
    server.register_function(bytes.upper, "upper")
    server.register_function(lambda: None, "nothing")
    server.register_introspection_functions()
    host, port = server.server_address
    with serving(server):
        with xmlrpc.client.ServerProxy(f"http://{host}:{port}/", transport=TimeoutTransport(),
                                       allow_none=True, use_builtin_types=True) as proxy:
            yield proxy


def test_xmlrpc_calls(xmlrpc_proxy):
    assert xmlrpc_proxy.add(2, 3) == 5
    assert xmlrpc_proxy.add("pre", "fork") == "prefork"
    # use_builtin_types and allow_none reached the dispatcher.
    assert xmlrpc_proxy.upper(b"\x00bytes") == b"\x00BYTES"
    assert xmlrpc_proxy.nothing() is None


def test_xmlrpc_fault(xmlrpc_proxy):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc_proxy.fail()
    assert "ValueError" in caught.value.faultString
    assert "no such luck" in caught.value.faultString
    # The server goes on serving after a fault.
    assert xmlrpc_proxy.add(1, 1) == 2


def test_xmlrpc_introspection(xmlrpc_proxy):
    methods = xmlrpc_proxy.system.listMethods()
    assert {"add", "fail", "upper", "nothing", "system.listMethods"} <= set(methods)
    assert xmlrpc_proxy.system.methodHelp("add") == "Return the sum of a and b."


# -- wsgiref.simple_server ----------------------------------------------------------------

class WSGIServer(prefork.ThreadingMixIn, prefork.TCPServer):
    """wsgiref.simple_server.WSGIServer, threaded, on prefork."""

    allow_reuse_address = True  # as http.server.HTTPServer
    application = None

    def server_bind(self):
        """Bind, store the server name and port (as HTTPServer), set up the environ."""
        # Not http.server.HTTPServer.server_bind: it calls the stdlib's TCPServer.server_bind.
        prefork.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port
        self.setup_environ()

    setup_environ = wsgiref.simple_server.WSGIServer.setup_environ
    get_app = wsgiref.simple_server.WSGIServer.get_app
    set_app = wsgiref.simple_server.WSGIServer.set_app


def environ_app(environ, start_response):
    """Answer with the parts of the request's environ, and its body, as JSON."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    reply = {key: environ[key] for key in
             ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PORT", "SERVER_NAME")}
    reply["body"] = environ["wsgi.input"].read(length).decode()
    body = json.dumps(reply).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize("method, target, body, path, query", [
    ("GET", "/hello/world?x=1&y=two", None, "/hello/world", "x=1&y=two"),
    ("POST", "/submit", "name=prefork&kind=server", "/submit", ""),
])
def test_wsgi_app(method, target, body, path, query):
    server = WSGIServer(("127.0.0.1", 0), wsgiref.simple_server.WSGIRequestHandler)
    server.set_app(environ_app)
    assert server.get_app() is environ_app
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    with http_connection(server) as connection:
        response, reply = fetch(connection, method, target, body, headers)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Server").startswith("WSGIServer/")
    assert json.loads(reply) == {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_PORT": str(server.server_port), "SERVER_NAME": server.server_name,
        "body": body or "",
    }
