"""`asva plan`'s arithmetic: DeepSpeed's own estimators, hand-worked cases, the paper's anchors, the command."""

from __future__ import annotations

import json

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from asva_platform import cli
from asva_platform.experiment import load_experiment
from asva_platform.planning import memory, plan

FULL = load_experiment("configs/avsync15.yaml", [])


def full_inventory(all_trainable: bool) -> memory.ParamInventory:
    inv = memory.unet_inventory(FULL.model)
    return memory.ParamInventory(
        inv.sizes, (True,) * len(inv.sizes) if all_trainable else inv.trainable, inv.largest_layer
    )


def test_the_paper_model_counts():
    inv = full_inventory(False)
    assert (inv.total, inv.trained) == (1_169_357_496, 309_836_532)


@pytest.mark.parametrize("world", [8, 32])
def test_zero2_agrees_with_deepspeeds_estimator(world):
    """DeepSpeed counts 2 bytes of 16-bit weights per parameter plus 18/N (16-bit and fp32 gradients, fp32
    masters, both moments). With every parameter trainable ours is the same, less the 16-bit gradient partition
    (freed before the step we count at; it lives during the backward pass) and plus the step counter."""
    inv = full_inventory(True)
    P = inv.total
    _, ds = estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=world, cpu_offload=False)
    ours = memory.model_states(inv, 2, "fp16", world)
    S = memory.zero_partition(P, world)
    assert ours.params + ours.grads + ours.optimizer + 2 * S - memory.STEP_COUNTER_BYTES == pytest.approx(
        ds, abs=2 * world * 18
    )


@pytest.mark.parametrize("world", [8, 32])
def test_zero3_agrees_with_deepspeeds_estimator(world):
    """DeepSpeed: 4 bytes per parameter of the largest layer (gathered 16-bit weights and gradients) plus 18/N
    (16-bit weights, fp32 gradients, masters and moments). Ours adds the 16-bit gradient partition it keeps and
    the step counter, pads each tensor's slice, and counts the bucket and the gathered weights apart."""
    inv = full_inventory(True)
    P = inv.total
    _, ds, _ = estimate_zero3_model_states_mem_needs(
        P, inv.largest_layer, num_gpus_per_node=world, cpu_offload=False
    )
    ours = memory.model_states(inv, 3, "fp16", world)
    slices = sum(-(-n // world) for n in inv.sizes)
    core = ours.params + ours.grads + ours.optimizer - 2 * slices - memory.STEP_COUNTER_BYTES
    core += (
        4 * inv.largest_layer
    )  # DeepSpeed's gathered layer; ours is `gathered` (DeepSpeed's defaults hold more)
    assert ours.gathered > 4 * inv.largest_layer
    assert core == pytest.approx(ds, rel=len(inv.sizes) * world / P + 1e-9)  # the padding of each slice


def test_hand_worked_zero_cases():
    inv = memory.ParamInventory(sizes=(10, 7, 200_001), trainable=(True, False, True), largest_layer=200_001)
    # ZeRO-2, 3 ranks: 200,011 trainable elements padded to a multiple of 6 -> 200,016, 66,672 per rank
    z2 = memory.model_states(inv, 2, "bf16", 3)
    assert memory.zero_partition(200_011, 3) == 66_672
    assert (z2.params, z2.grads, z2.optimizer) == (2 * 200_018, 4 * 66_672, 12 * 66_672 + 4)
    assert z2.buckets == 2 * 500_000_000 and z2.gathered == 0
    # ZeRO-3, 3 ranks: slices 4, 3 and 66,667 elements; the two small tensors persist whole
    z3 = memory.model_states(inv, 3, "bf16", 3)
    assert (z3.params, z3.grads, z3.optimizer) == (2 * 66_674, 6 * 66_671, 12 * 66_671 + 4)
    assert (
        z3.gathered == 2 * 17 + 2 * 200_001
    )  # DeepSpeed's defaults keep every weight gathered until backward
    # ZeRO-0 in fp32: the weights are the masters; a step counter per trainable tensor
    z0 = memory.model_states(inv, 0, "fp32", 3)
    assert (z0.params, z0.grads, z0.optimizer) == (4 * 200_018, 4 * 200_011, 8 * 200_011 + 8)
    assert plan.checkpoint_bytes(inv, 3, "bf16", 3) == 3 * (2 * 3 + 12 * 66_671)
    # per optimizer step of 2 micro-steps: ZeRO-3 gathers every weight twice per micro-step
    assert plan.comm_bytes_per_step(inv, 3, "bf16", 2) == 2 * (2 * 2 * 200_018 + 2 * 200_011)
    assert plan.comm_bytes_per_step(inv, 1, "bf16", 2) == 2 * 2 * 200_011


def test_activations_scale_with_the_batch_and_checkpointing_cuts_them():
    tokens = plan.build_audio_encoder(
        memory.geometry_only(memory.config_key(FULL.model)), device="meta"
    ).num_tokens
    one = memory.activations(FULL.model, FULL.sampling, 1, tokens)
    two, three = (memory.activations(FULL.model, FULL.sampling, b, tokens) for b in (2, 3))
    assert three.total - two.total == two.total - one.total > 0.9 * one.total  # linear, nearly proportional
    assert one.bytes(True, "bf16") < one.bytes(False, "bf16") / 3
    assert one.bytes(False, "bf16") == one.total // 2


def shape(**kw) -> plan.TrainingShape:
    return plan.TrainingShape(**{"precision": "fp16", "micro_batch": 4, "global_batch": 64, **kw})


def test_the_authors_cluster_fits_at_their_micro_batch():
    """The authors trained on 8 RTX A4500 of 20 GB at micro-batch 4 with gradient checkpointing."""
    cluster = plan.ClusterSpec(nodes=1, gpus_per_node=8, gpu_memory_gb=20, gpu_tflops=100)
    p = plan.plan(FULL.model, FULL.sampling, shape(), plan.CacheShape(), cluster)
    fitting = [s for s in p.stages if s.fits and s.micro_batch == 4 and s.accumulation == 2]
    assert fitting and p.best() is not None
    no_ckpt = plan.plan(FULL.model, FULL.sampling, shape(grad_ckpt=False), plan.CacheShape(), cluster)
    assert all(a.largest_micro_batch > b.largest_micro_batch for a, b in zip(p.stages, no_ckpt.stages))
    assert no_ckpt.stages[0].largest_micro_batch < 4  # why the authors, on plain data parallelism, checkpoint


def test_a_bigger_cluster_runs_faster_and_memory_decides_the_micro_batch():
    small = plan.plan(FULL.model, FULL.sampling, shape(), plan.CacheShape(), plan.ClusterSpec(1, 8, 20.0))
    big = plan.plan(FULL.model, FULL.sampling, shape(), plan.CacheShape(), plan.ClusterSpec(4, 8, 80.0))
    assert big.stages[2].train_hours < small.stages[2].train_hours
    assert big.stages[3].comm_seconds > 2 * big.stages[2].comm_seconds  # the frozen weights travel too
    assert big.stages[2].micro_batch == 2 and big.stages[2].accumulation == 1  # 64 clips over 32 GPUs
    tiny_gpu = plan.plan(FULL.model, FULL.sampling, shape(), plan.CacheShape(), plan.ClusterSpec(1, 8, 4.0))
    assert tiny_gpu.best() is None and "nothing fits" in plan.render(tiny_gpu)


def test_the_command_prints_a_table_and_json(capsys):
    args = [
        "plan",
        "--config",
        "configs/avsync15.yaml",
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--gpu-memory-gb",
        "80",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "ZeRO-3" in out and "GPU-hours" in out and "latent cache" in out
    assert cli.main([*args, "--zero", "2", "--precision", "bf16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["zero_stage"] for s in data["stages"]] == [2] and data["precision"] == "bf16"
    assert data["stages"][0]["fits"] and data["best_zero_stage"] == 2


def test_the_evaluation_estimate_counts_each_guidance_branch_and_every_clip(capsys):
    """One UNet pass per step at scale 1 and two with guidance, the same encode/decode either way; the hours are
    total FLOPs over peak x MFU. The command prints the line and puts it in its JSON."""
    from asva_platform.planning import flops
    from asva_platform.planning.evaluation import AVSYNC15_TEST_VIDEOS, clips_scored, evaluation_plan

    unet = flops.training_flops_per_sample(FULL.model, FULL.sampling).forward
    one = flops.sampling_flops_per_clip(FULL.model, FULL.sampling, 50, 1)
    two = flops.sampling_flops_per_clip(FULL.model, FULL.sampling, 50, 2)
    assert two - one == pytest.approx(50 * unet) and one > 50 * unet
    assert clips_scored(0, 0, 3) == AVSYNC15_TEST_VIDEOS * 3 and clips_scored(40, 10, 3) == 30
    p = evaluation_plan(FULL.model, FULL.sampling, 50, 450, (1.0, 4.0, 8.0), 3, 1e15, 0.5)
    assert p.gpu_hours == pytest.approx(450 * 3 * (one + 2 * two) / (1e15 * 0.5) / 3600)
    args = ["plan", "--config", "configs/avsync15.yaml", "--gpu", "H100", "--eval-scales", "1,4,8"]
    assert cli.main([*args, "--eval-seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "evaluation: 9 trials (audio guidance 1 / 4 / 8 x 3 seeds) x 450 clips, 50 sampler steps" in out
    assert cli.main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["evaluation"]
    assert data["seeds"] == 1 and data["clips"] == 450 and data["gpu_hours"] > 0
