"""User-facing errors: one clear line and a non-zero exit, never a traceback for a user mistake."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, architecture, dataset, checkpoint).

    Command-line entry points (`fastnas.cli.cli_entry`) print its message on one line and exit
    with status 2.
    """

