"""What every `python -m fastnas.*` command does the same way.

- A UserError is one line, `fastnas: error: ...`, and exit status 2; never a traceback.
- A reader that closes the pipe early (`... | head`) is a normal way to stop: no traceback, and
  the exit status a shell tool killed by SIGPIPE would have (141).
- `section.key=value` overrides may stand before, between or after the flags.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

from fastnas.errors import UserError

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 128 + 13     # 128 + SIGPIPE, as `yes | head` reports under pipefail
EXIT_INTERRUPTED = 130


def cli_entry(main):
    """Wrap a `main(argv) -> int` with the conventions above."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            code = main(argv)
            sys.stdout.flush()      # a closed pipe surfaces here, inside the handler below
            return code
        except UserError as e:
            print(f"fastnas: error: {e}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        except BrokenPipeError:
            # Python would flush stdout again at exit and print "Exception ignored": point it at
            # /dev/null first (the recipe in Python's signal docs).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            print("fastnas: interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED

    return wrapped


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """`parser.parse_args`, but positionals (the overrides) may come after flags too.

    Plain argparse stops collecting `nargs="*"` positionals at the first flag, so
    `train.max_steps=1 --config X train.run_dir=Y` fails with "unrecognized arguments".
    """
    return parser.parse_intermixed_args(argv)
