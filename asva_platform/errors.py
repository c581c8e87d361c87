"""One-line errors for users: known problems print ``error: <what>`` and exit 2, with no traceback wall."""

from __future__ import annotations

import sys
from collections.abc import Callable

from asva_platform.config import ConfigError
from asva_platform.storage import StorageError
from asva_platform.tracking import TrackingError


class UserError(RuntimeError):
    """A problem the user can fix (bad argument, missing input), phrased as one line."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (ConfigError, StorageError, TrackingError, UserError)


def run_guarded(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a known error becomes one line on stderr and exit code 2."""
    from asva_platform.stack import StackError

    try:
        return int(main(argv) or 0)
    except (*KNOWN_ERRORS, StackError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
