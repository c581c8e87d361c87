"""One-line errors for users: known problems print ``error: <what>`` and exit 2, with no traceback wall.

Every such error subclasses :class:`~asva_model.errors.AsvaError` (config, storage, tracking, data, stack
and the :class:`UserError` below), so one ``except`` tells a user's mistake from a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from asva_model.errors import AsvaError


class UserError(AsvaError, RuntimeError):
    """A problem the user can fix (bad argument, missing input), phrased as one line."""


def run_guarded(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a known error becomes one line on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except AsvaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
