"""Where training goes after a resume: an epoch resumed at its very end (a checkpoint at its last batch, or a
resume on more workers whose share of what is left is under one batch each) rolls over to the next epoch
and training goes on; only a fresh epoch without a batch ends the run (the data is too small).

The source is modelled as both data paths shard an epoch: each rank an equal share of its windows
(``equal_share``), batched with drop_last, the first ``skip`` batches skipped."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from asva_platform.artifacts.checkpoint import TrainerState
from asva_platform.training.checkpoint import resharded_position
from asva_platform.training.data import equal_share
from asva_platform.training.loop import epoch_batches

EPOCH = 6
Batch = list[tuple[int, int]]
"""A micro-batch of clips, each ``(epoch, window)``."""


@dataclass
class ShardSource:
    """Rank ``rank`` of ``world``'s batches of epochs of ``windows`` windows; records what it was asked for."""

    windows: int
    batch_size: int
    rank: int
    world: int
    calls: list[tuple[int, int]] = field(default_factory=list)

    def train_batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        self.calls.append((epoch, skip))
        mine = equal_share([(epoch, w) for w in range(self.windows)], self.rank, self.world)
        b = self.batch_size
        return iter([mine[i : i + b] for i in range(0, len(mine) - b + 1, b)][skip:])


def batches_per_rank(windows: int, batch_size: int, world: int) -> int:
    return windows // world // batch_size


def train(batches: Iterator[Batch], micro_steps: int) -> Counter:
    """A step function that counts: ``micro_steps`` micro-batches, the clips trained on per epoch."""
    clips: Counter = Counter()
    for _ in range(micro_steps):
        clips.update(epoch for epoch, _window in next(batches))
    return clips


@pytest.mark.parametrize("saved_world, world", [(1, 2), (2, 1), (1, 1), (2, 2)])
def test_every_resume_position_of_an_epoch_trains_on_into_the_next(saved_world, world):
    remainders = set()
    for windows, batch_size in itertools.product((7, 10, 13), (1, 2, 3)):
        per_rank = batches_per_rank(windows, batch_size, world)
        for taken in range(batches_per_rank(windows, batch_size, saved_world) + 1):  # up to the epoch's end
            skip = resharded_position(taken, saved_world, world)
            left = max(per_rank - skip, 0)
            remainders.add(left)
            for rank in range(world):
                case = f"{windows} windows, batch {batch_size}, {taken} batches on {saved_world}: rank {rank}"
                source = ShardSource(windows, batch_size, rank, world)
                state = TrainerState(step=40, samples_seen=160, epoch=EPOCH, batches_in_epoch=skip)
                batches = epoch_batches(state, source.train_batches)
                clips = train(batches, left + per_rank)  # what is left of the resumed epoch, then the next
                assert clips == Counter({EPOCH: left * batch_size, EPOCH + 1: per_rank * batch_size}), case
                assert (state.epoch, state.batches_in_epoch) == (EPOCH + 1, per_rank), case
                assert next(batches)[0][0] == EPOCH + 2, case  # and on, from the start of the epoch after
                assert source.calls == [(EPOCH, skip), (EPOCH + 1, 0), (EPOCH + 2, 0)], case
                assert (state.step, state.samples_seen) == (40, 160), (
                    case
                )  # the sample position is the caller's
    assert 0 in remainders and max(remainders) > 0  # resumed on both sides of the boundary


def test_growing_from_one_to_two_workers_at_the_epochs_end_goes_on_with_the_next_epoch():
    """The reliability run's case: one worker saved after the last of its 6 batches of 13 windows; on 2
    workers each share of 6 windows holds 3 batches, all 3 already trained on."""
    skip = resharded_position(6, 1, 2)
    assert skip == 3
    for rank in range(2):
        state = TrainerState(step=12, samples_seen=24, epoch=EPOCH, batches_in_epoch=skip)
        first = next(epoch_batches(state, ShardSource(13, 2, rank, 2).train_batches))
        assert first == [(EPOCH + 1, rank), (EPOCH + 1, rank + 2)]
        assert (state.epoch, state.batches_in_epoch) == (EPOCH + 1, 1)


def test_a_fresh_epoch_without_a_batch_still_ends_the_run():
    too_small = ShardSource(windows=3, batch_size=2, rank=0, world=2).train_batches  # 1 window each
    with pytest.raises(
        RuntimeError, match="^epoch 3 produced no batch: the training data has fewer windows than"
    ):
        next(epoch_batches(TrainerState(epoch=3), too_small))
    # a resumed epoch rolls over, and the fresh one after it is just as empty: the same error, naming that one
    with pytest.raises(RuntimeError, match="^epoch 7 produced no batch"):
        next(epoch_batches(TrainerState(epoch=EPOCH, batches_in_epoch=2), too_small))
