"""Free the worker reservations of train trials that Tune stops.

When a scheduler (ASHA) stops a trial, Tune kills the trial's actor, and with it the Train V2 controller
the trial started. The controller's placement group (its workers' CPUs/GPUs) belongs to the *job*, not to
the controller, so it outlives it. Ray Train's own ``PlacementGroupCleaner`` would remove it, but it learns
of the controller's death through the state API, which needs the dashboard and a single Ray instance per
machine; without them (a local run, CI) every stopped trial leaks its workers' resources and the next
trial waits forever for them.

So the sweep keeps its own ledger: :class:`RecordPlacementGroups` (a callback of the trial's
TorchTrainer, run in the controller) sends each worker group's placement group, with a handle to the
controller, to the sweep's :class:`PlacementGroupLedger` actor. When Tune is done with the trial the driver
calls :func:`release_trial`: the ledger ends the trial's controller *first* (removing the group under a
live controller would make it restart its workers in a new group), waits until it is gone, then removes
the groups. A group recorded after its trial was released is dealt with the same way at once.

The callback base class is Ray Train's internal worker-group hook (Train V2 passes non-user callbacks
from ``RunConfig.callbacks`` to the controller for exactly this kind of workaround); ray is pinned.
"""

from __future__ import annotations

import hashlib
import logging
import time

import ray
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.util.placement_group import remove_placement_group

log = logging.getLogger(__name__)


def ledger_name(sweep_uri: str) -> str:
    return "asva-sweep-pg-ledger-" + hashlib.sha1(sweep_uri.encode()).hexdigest()[:12]


@ray.remote(num_cpus=0)
class PlacementGroupLedger:
    """Placement groups (and their controllers) of each trial's training workers; frees a trial's on release."""

    def __init__(self) -> None:
        self.entries: dict[str, list] = {}
        self.released: set[str] = set()

    def record(self, trial_id: str, group, controller) -> None:
        if trial_id in self.released:
            _free([(group, controller)])
        else:
            self.entries.setdefault(trial_id, []).append((group, controller))

    def release(self, trial_id: str) -> int:
        self.released.add(trial_id)
        entries = self.entries.pop(trial_id, [])
        _free(entries)
        return len(entries)


def _free(entries: list, wait_s: float = 60.0) -> None:
    """End the controllers, wait until they are gone, then remove their groups."""
    from ray.exceptions import GetTimeoutError, RayActorError

    controllers = [c for _, c in entries]
    for controller in controllers:
        ray.kill(controller, no_restart=True)
    deadline = time.monotonic() + wait_s
    for controller in controllers:
        while time.monotonic() < deadline:
            try:
                ray.get(controller.__ray_ready__.remote(), timeout=2)
            except RayActorError:
                break  # gone
            except GetTimeoutError:
                pass
            time.sleep(0.2)
    for group, _ in entries:
        try:
            remove_placement_group(group)
        except Exception as err:  # noqa: BLE001 - already removed by a controller that shut down cleanly
            log.debug("placement group %s: %s", group.id, err)


def start_ledger(sweep_uri: str):
    """The sweep's ledger (one per driver; named so a restored Tune callback finds it). Keep the returned
    handle for the whole sweep: a named actor nobody holds a handle to is collected."""
    return PlacementGroupLedger.options(name=ledger_name(sweep_uri), get_if_exists=True).remote()


def release_trial(sweep_uri: str, trial_id: str) -> int:
    """End the training controller(s) of ``trial_id`` and remove their placement groups (now, and any recorded later)."""
    try:
        ledger = ray.get_actor(ledger_name(sweep_uri))
    except ValueError:  # no train trials in this driver
        return 0
    return ray.get(ledger.release.remote(trial_id), timeout=120)


class RecordPlacementGroups(WorkerGroupCallback):
    """TorchTrainer callback (runs in the controller): report each worker group's placement group."""

    def __init__(self, sweep_uri: str, trial_id: str) -> None:
        self.sweep_uri = sweep_uri
        self.trial_id = trial_id

    def after_worker_group_start(self, worker_group) -> None:
        try:
            group = worker_group.get_worker_group_state().placement_group_handle.placement_group
            controller = ray.get_runtime_context().current_actor
            ledger = ray.get_actor(ledger_name(self.sweep_uri))
            ray.get(ledger.record.remote(self.trial_id, group, controller), timeout=30)
        except Exception as err:  # noqa: BLE001 - bookkeeping must never fail the training run
            log.warning(
                "sweep trial %s: could not record its workers' placement group (%s); if the trial is "
                "stopped early its workers' resources stay reserved until the sweep ends",
                self.trial_id,
                err,
            )
