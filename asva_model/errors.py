"""The project's error vocabulary: one base class for problems a user can fix, and ``require``.

Every one-line error in the project (here and in ``asva_platform``) subclasses :class:`AsvaError`, so a
command line can print such an error as its one line and exit, and treat anything else as a bug.
"""

from __future__ import annotations


class AsvaError(Exception):
    """A problem the user can fix, phrased as one line."""


class ConfigError(AsvaError, ValueError):
    """A config problem, phrased as one line that names the key (``key: why``); loaders prefix the
    section path and the file."""


def require(cond: bool, key: str, why: str) -> None:
    """Raise ``ConfigError("key: why")`` unless ``cond`` (config ``__post_init__`` checks)."""
    if not cond:
        raise ConfigError(f"{key}: {why}")
