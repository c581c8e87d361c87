"""What a test session leaves running. conftest.py puts ``ASVA_TEST_SESSION=<id>`` in the session's environment
at import, so every process the session starts inherits it: servers, Ray nodes, their workers and actors
(a ``ray::TrainController`` too), jobs and the local Rays the jobs start. :func:`reap` finds the ones still
running at the end by that variable, whoever their parent is now."""

from __future__ import annotations

import os
import uuid

import psutil

SESSION_ENV = "ASVA_TEST_SESSION"
SESSION_ID = uuid.uuid4().hex


MULTIPROCESSING_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""Helpers Python's multiprocessing starts for this process (torch, librosa, joblib use it): they exit when it
does (their pipe to it closes), so they are not left behind."""


def _own_helper(p: psutil.Process) -> bool:
    try:
        return p.ppid() == os.getpid() and any(h in " ".join(p.cmdline()) for h in MULTIPROCESSING_HELPERS)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def session_processes(session_id: str = SESSION_ID) -> list[psutil.Process]:
    """Live processes (not this one, not zombies, not this one's multiprocessing helpers) whose environment
    names the session."""
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE or _own_helper(p):
            continue
        try:
            if p.environ().get(SESSION_ENV) == session_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return str(p.pid)


def reap(grace_s: float = 15.0, session_id: str = SESSION_ID) -> list[str]:
    """Give the session's remaining processes ``grace_s`` to exit on their own (Ray's workers notice their raylet
    is gone within seconds), SIGKILL the rest; returns those killed."""
    _, alive = psutil.wait_procs(session_processes(session_id), timeout=grace_s)
    killed = []
    for p in alive:
        killed.append(describe(p))
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return killed
