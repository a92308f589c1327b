"""tests/apps/commands.py's handler, in a module whose every re-import (a reload
of a new generation, preload_app False) takes $PREFORK_TEST_RELOAD_DELAY seconds
(default 0.5): its workers boot slowly, so that reloads overlap -- a HUP storm.
The first import, in the master, is quick."""

import os
import time

from commands import StreamCommands

if globals().get("_imported"):  # importlib.reload() keeps the module's globals
    time.sleep(float(os.environ.get("PREFORK_TEST_RELOAD_DELAY", "0.5")))
_imported = True


class SlowReloadCommands(StreamCommands):
    """StreamCommands, defined here so that a reload re-imports this module."""
