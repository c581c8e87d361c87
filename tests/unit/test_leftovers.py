"""A test session finds what it left running by the marker in its environment, wherever the process went."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psutil

from tests import leftovers


def test_a_detached_process_of_the_session_is_found_and_stopped():
    session = uuid.uuid4().hex
    env = dict(os.environ, **{leftovers.SESSION_ENV: session})
    # its own session, as the stack's servers are started: no longer this process's to wait for
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], env=env, start_new_session=True
    )
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env=dict(os.environ, **{leftovers.SESSION_ENV: uuid.uuid4().hex}),
    )
    try:
        assert [p.pid for p in leftovers.session_processes(session)] == [proc.pid]
        killed = leftovers.reap(grace_s=0.5, session_id=session)
        assert len(killed) == 1 and killed[0].startswith(f"{proc.pid} ") and "time.sleep(120)" in killed[0]
        assert proc.wait(timeout=10) == -9
        assert psutil.Process(other.pid).is_running() and leftovers.session_processes(session) == []
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


def test_a_process_that_ends_within_the_grace_period_is_not_reported():
    session = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.5)"],
        env=dict(os.environ, **{leftovers.SESSION_ENV: session}),
    )
    try:
        assert leftovers.reap(grace_s=30, session_id=session) == []
    finally:
        proc.wait(timeout=30)
