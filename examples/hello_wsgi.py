"""A WSGI application, run by the prefork command as gunicorn would run it:

    prefork -b 127.0.0.1:8000 -w 4 hello_wsgi:app
    prefork -b 127.0.0.1:8000 -w 2 --threads 8 "hello_wsgi:create_app('Bonjour')"

The second form calls the factory once and serves what it returns.
"""


def create_app(greeting="Hello"):
    def app(environ, start_response):
        body = f"{greeting} from {environ['SERVER_SOFTWARE']}: {environ['PATH_INFO']}\n"
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Length", str(len(body.encode())))])
        return [body.encode()]
    return app


app = create_app()
