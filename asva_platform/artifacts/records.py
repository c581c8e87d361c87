"""What every record in ``artifacts/`` shares: a schema version, written with it and checked on reading."""

from __future__ import annotations

from asva_platform.errors import UserError


class RecordVersionError(UserError):
    """A record written by a newer platform than this one; one line naming it."""


def check_version(found: object, supported: int, where: str) -> int:
    """``found`` as an int when this code reads that version (``1 <= found <= supported``); otherwise one
    line naming the record: a newer platform wrote it, or it is not a record at all."""
    if not isinstance(found, int) or isinstance(found, bool) or not 1 <= found <= supported:
        raise RecordVersionError(
            f"{where}: schema version {found!r} is not one this platform reads (1..{supported}); "
            "it was written by another version of asva-platform"
        )
    return found
