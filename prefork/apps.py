"""What the prefork command runs: MODULE:OBJECT, found and told apart.

OBJECT is one of three kinds (App.kind):

  "handler"  a request-handler class (a BaseRequestHandler, prefork's or the
             standard library's -- http.server's handlers too)
  "server"   a server class (a BaseServer, e.g. an xmlrpc.server one)
  "wsgi"     a WSGI application: any other callable; MODULE:factory() (literal
             arguments allowed) calls factory once and takes what it returns

The user's mistakes -- no such module, no such attribute, an object of no
usable kind -- raise AppNotFound with one line saying what was looked for
and where.  An exception raised by the application's own code while it is
imported goes up unchanged: it is the user's code, and its traceback says
where.
"""

import ast
import importlib
import os
import sys

HANDLER = "handler"
SERVER = "server"
WSGI = "wsgi"

DEFAULT_OBJECT = "application"  # MODULE alone means MODULE:application, as gunicorn


class AppNotFound(Exception):
    """MODULE:OBJECT does not name something the command can run."""


class App:
    """A loaded application: spec (as given), kind, obj and module."""

    def __init__(self, spec, kind, obj, module):
        self.spec = spec
        self.kind = kind
        self.obj = obj
        self.module = module

    def describe(self):
        words = {HANDLER: "a request handler class", SERVER: "a server class",
                 WSGI: "a WSGI application"}[self.kind]
        return f"{self.spec} ({words})"


def load(spec):
    """Import spec's module and find its object: an App; AppNotFound if none."""
    module_name, expression = split_spec(spec)
    module = import_module(spec, module_name)
    obj = evaluate(spec, module, expression)
    return App(spec, kind_of(spec, obj), obj, module)


def reload(app):
    """The same spec, its module imported afresh (a worker's new code)."""
    module = fresh_import(app.module)
    _, expression = split_spec(app.spec)
    obj = evaluate(app.spec, module, expression)
    return App(app.spec, kind_of(app.spec, obj), obj, module)


def fresh_import(module):
    """Import module again from its source on disk (importlib.reload), as
    edited now.  Cached bytecode is trusted on the source's size and mtime
    in whole seconds: an edit of the same size within that second would not
    show, so the cache is removed first (if it can be); so is the listing of
    its directory that the import system keeps.  (Not every finder's caches,
    as importlib.invalidate_caches() would: from Python 3.12 that imports
    importlib.metadata -- a cost at each boot, and an import that fails in a
    worker run as a user who cannot read the interpreter's files.)"""
    if getattr(module, "__cached__", None):
        try:
            os.unlink(module.__cached__)
        except OSError:
            pass
    if getattr(module, "__file__", None):
        finder = sys.path_importer_cache.get(os.path.dirname(module.__file__))
        if hasattr(finder, "invalidate_caches"):
            finder.invalidate_caches()
    return importlib.reload(module)


def split_spec(spec):
    module_name, colon, expression = spec.partition(":")
    if not module_name or (colon and not expression):
        raise AppNotFound(f"application {spec!r}: expected MODULE:OBJECT, e.g. myapp:app")
    return module_name, expression or DEFAULT_OBJECT


def import_module(spec, module_name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only when the missing module is the one named (or a package of it):
        # a module missing inside the application is the application's error.
        if error.name is None or not (module_name == error.name
                                      or module_name.startswith(error.name + ".")):
            raise
        raise AppNotFound(f"application {spec!r}: no module named {error.name!r} "
                          f"in {os.getcwd()} or on the Python path") from None


def evaluate(spec, module, expression):
    """module's attribute named by expression: NAME, NAME.NAME, or a call of
    one with literal arguments (a factory)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise AppNotFound(f"application {spec!r}: {expression!r} is not an attribute name "
                          "or a call such as create_app()") from None
    call = None
    if isinstance(tree, ast.Call):
        call, tree = tree, tree.func
    obj = _attribute(spec, module, _dotted_name(spec, expression, tree))
    if call is None:
        return obj
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError:
        raise AppNotFound(f"application {spec!r}: a factory's arguments must be "
                          "literals (strings, numbers...)") from None
    if not callable(obj):
        raise AppNotFound(f"application {spec!r}: {_name(obj)} is not callable")
    try:
        return obj(*args, **kwargs)
    except TypeError as error:
        if error.__traceback__.tb_next is not None:
            raise  # raised inside the factory: the application's own error
        raise AppNotFound(f"application {spec!r}: {error}") from None


def kind_of(spec, obj):
    if isinstance(obj, type):
        if _derives_from(obj, "BaseRequestHandler", ("prefork.handlers", "socketserver")):
            return HANDLER
        if _derives_from(obj, "BaseServer", ("prefork.server", "socketserver")):
            return SERVER
        raise AppNotFound(f"application {spec!r}: the class {obj.__qualname__} is neither a "
                          "request handler (BaseRequestHandler) nor a server (BaseServer) class")
    if callable(obj):
        return WSGI
    raise AppNotFound(f"application {spec!r}: {_name(obj)} is not a request handler class, "
                      "a server class or a WSGI application (a callable)")


def _dotted_name(spec, expression, tree):
    names = []
    while isinstance(tree, ast.Attribute):
        names.append(tree.attr)
        tree = tree.value
    if not isinstance(tree, ast.Name):
        raise AppNotFound(f"application {spec!r}: {expression!r} is not an attribute name "
                          "or a call such as create_app()")
    return [tree.id] + names[::-1]


def _attribute(spec, module, names):
    obj = module
    for depth, name in enumerate(names):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            where = getattr(module, "__file__", None) or module.__name__
            looked = ".".join(names[:depth + 1])
            raise AppNotFound(f"application {spec!r}: no attribute {looked!r} in module "
                              f"{module.__name__!r} ({where})") from None
    return obj


def _derives_from(cls, name, modules):
    return any(base.__name__ == name and base.__module__ in modules for base in cls.__mro__)


def _name(obj):
    return f"{type(obj).__name__} {obj!r}"[:80]

