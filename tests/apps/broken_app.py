"""An application whose import fails in its own code (a test of how that is told)."""

import os


def helper():
    return os.environ["PREFORK_TEST_SURELY_UNSET_VARIABLE"]  # KeyError, in the user's code


VALUE = helper()
