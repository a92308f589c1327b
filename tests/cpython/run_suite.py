"""Run one of CPython's own test suites with prefork as its ``socketserver``.

    PYTHONPATH=/path/to/prefork python tests/cpython/run_suite.py test.test_httpservers \\
        [--test-timeout SECONDS] [--exclude TEST_ID ...]

The suite is the running interpreter's (its ``test`` package).  Before
anything imports http.server, xmlrpc.server or wsgiref, ``socketserver`` is
prefork in sys.modules, so their servers are built on prefork; the runner
checks that they are, before and after the run.  Each test gets
--test-timeout seconds: past that, faulthandler prints every thread's
traceback and the process exits, so a hang fails instead of blocking CI.

The last line of output is ``SUMMARY {json}``: run, passed, skipped,
failed (ids) and excluded.  Exit status: 0 if every test passed or was
skipped, 1 otherwise, NO_SUITE if this interpreter has no such suite.
"""

# None of these imports socketserver: use_prefork_as_socketserver() checks.
import argparse
import faulthandler
import importlib
import importlib.util
import json
import sys
import unittest

NO_SUITE = 4

# The stdlib servers the suites exercise; each must be a prefork server.
SERVERS = [
    ("http.server", "HTTPServer"),
    ("http.server", "ThreadingHTTPServer"),
    ("xmlrpc.server", "SimpleXMLRPCServer"),
    ("xmlrpc.server", "MultiPathXMLRPCServer"),
    ("wsgiref.simple_server", "WSGIServer"),
]


def has_suite(name):
    """Whether this interpreter has the suite (finding it imports only ``test``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # no ``test`` package at all
        return False


def use_prefork_as_socketserver():
    """Make ``import socketserver`` give prefork from now on; return prefork."""
    import prefork
    if "socketserver" in sys.modules:
        raise RuntimeError("the stdlib's socketserver was imported before prefork replaced it")
    sys.modules["socketserver"] = prefork
    return prefork


def check_prefork_serves(prefork, suite_module):
    """Fail unless socketserver, for the suite and for the stdlib servers, is prefork."""
    if sys.modules["socketserver"] is not prefork:
        raise AssertionError("sys.modules['socketserver'] is no longer prefork")
    if getattr(suite_module, "socketserver", prefork) is not prefork:
        raise AssertionError(f"{suite_module.__name__}.socketserver is not prefork")
    for module_name, class_name in SERVERS:
        cls = getattr(importlib.import_module(module_name), class_name)
        if prefork.TCPServer not in cls.__mro__:
            raise AssertionError(f"{module_name}.{class_name} is not built on prefork.TCPServer")


def iter_tests(suite):
    """The test cases of a (nested) suite, in order."""
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from iter_tests(test)
        else:
            yield test


class TimedResult(unittest.TextTestResult):
    """A result that gives every test at most `test_timeout` seconds.

    faulthandler's watchdog is a thread, so it fires whatever the test's
    threads are blocked in, and exits: a hung test cannot hang the run.
    """

    test_timeout = 60.0

    def startTest(self, test):
        super().startTest(test)
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)


def main(argv=None):
    """Run the suite named on the command line; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="a module of CPython's test package, e.g. test.test_xmlrpc")
    parser.add_argument("--test-timeout", type=float, default=TimedResult.test_timeout,
                        help="seconds one test may take (default %(default)s)")
    parser.add_argument("--exclude", action="append", default=[], metavar="TEST_ID",
                        help="a test id (module.Class.method) not to run; repeatable")
    args = parser.parse_args(argv)

    if not has_suite(args.suite):
        print(f"{sys.executable} has no {args.suite}: CPython's test package is not installed")
        return NO_SUITE
    prefork = use_prefork_as_socketserver()
    module = importlib.import_module(args.suite)
    check_prefork_serves(prefork, module)

    excluded = set(args.exclude)
    tests = list(iter_tests(unittest.defaultTestLoader.loadTestsFromModule(module)))
    kept = unittest.TestSuite(t for t in tests if t.id() not in excluded)
    found_excluded = sorted(excluded & {t.id() for t in tests})

    TimedResult.test_timeout = args.test_timeout
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=TimedResult)
    result = runner.run(kept)
    check_prefork_serves(prefork, module)

    failed = [test.id() for test, _ in result.failures + result.errors]
    failed += [test.id() for test in result.unexpectedSuccesses]
    summary = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "run": result.testsRun,
        "skipped": len(result.skipped),
        "passed": result.testsRun - len(result.skipped) - len(failed),
        "failed": failed,
        "excluded": found_excluded,
        "excluded_absent": sorted(excluded - set(found_excluded)),
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
