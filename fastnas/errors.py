"""User-facing errors: one clear line and a non-zero exit, never a traceback for a user mistake."""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A mistake in the user's input (config, architecture, dataset, checkpoint).

    Command-line entry points print its message on one line and exit with status 2.
    """


def cli_entry(main):
    """Wrap a `main(argv) -> int` so a UserError becomes `fastnas: error: ...` and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except UserError as e:
            print(f"fastnas: error: {e}", file=sys.stderr, flush=True)
            return 2
        except KeyboardInterrupt:
            print("fastnas: interrupted", file=sys.stderr, flush=True)
            return 130

    return wrapped
