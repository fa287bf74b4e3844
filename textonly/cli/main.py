"""Command line: ``python -m textonly VERB ...`` (``--help`` lists the verbs).

The verbs and their arguments are in :mod:`textonly.cli.parser`, what they do in
:mod:`textonly.cli.commands`. Errors the user can act on (a malformed dataset, an
unreachable hub, a missing file) print one line starting with ``error:`` and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import sys

from textonly.cli.parser import build_parser
from textonly.core.errors import TextonlyError


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: this process's arguments); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(verbs=argv[:1]).parse_args(argv)  # only the verb being run imports its choices
    try:
        return args.func(args)
    except TextonlyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug or the system's, with its traceback
            raise
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left looking finished", file=sys.stderr)
        return 130
