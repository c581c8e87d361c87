"""What a command printed, without what Ray's log monitor interleaved into the same stream.

A test process that started Ray earlier keeps a driver whose background thread forwards actor and worker
log lines (``(PlacementGroupCleaner pid=12062) ...``, coloured) to this process's stderr at any moment, so a
captured stream may hold them before, between or after the lines the command under test wrote.
"""

from __future__ import annotations

import re

_RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\([\w.:-]+ pid=\d+(, ip=[\d.]+)?\)")


def own_lines(stream: str) -> list[str]:
    """The non-empty lines of ``stream`` that Ray did not forward from an actor or worker."""
    return [line for line in stream.strip().splitlines() if line.strip() and not _RAY_FORWARDED.match(line)]
