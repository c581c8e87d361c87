"""``python -m asva_platform.dev.ray_loopback_node start --address=127.0.0.1:PORT ...``: ``ray start`` for a
worker node of a loopback-only cluster on this machine.

Ray offers one switch to keep a node on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, see
:mod:`asva_platform.dev.ray_local`), and the same switch makes ``ray start --address`` refuse to start a worker
node; without it, ``ray start`` rewrites the head's 127.0.0.1 into the host's outward address, where the head
does not listen. This entry keeps the switch on for the node's processes (so they bind 127.0.0.1) and, in this
process only, lets the worker node start and leaves the loopback address as given.
"""

from __future__ import annotations

import sys


def main() -> int:
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    ray_constants.ENABLE_RAY_CLUSTER = True  # the worker-node check of `ray start`
    services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 as given
    return ray_main()


if __name__ == "__main__":
    sys.exit(main())
