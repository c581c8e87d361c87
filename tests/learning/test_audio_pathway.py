"""The audio pathway learns (CI-sized): after a short training on strongly audio-driven synthetic clips, the
held-out denoising loss with each window's own audio is lower than with another clip's audio (paired,
significant). The control shows the test can fail: the same measurement on the same model with its audio
cross-attention cut (output projections zeroed) finds no gap at all, so the gap is the audio pathway's.

The UNet, frozen audio encoder and AVSyncD objective are the model's real code; decoding is bypassed
(windows come straight from the synthetic generator), the VAE is replaced by pooled pixels and the loop is
a plain PyTorch one: no service, but minutes of training (about 4 on two cores), hence the learning tier rather
than the unit tier. The whole recipe with its real VAE and jobs is measured by `python -m bench learn`
(docs/toy.md).
"""

from __future__ import annotations

import pytest
import torch

from asva_model.build import build_noise_scheduler
from asva_model.objective import audio_loss_gap
from tests.learning.toy_training import TEST_CLIPS, TEST_WINDOWS


def _gap(exp, unet, held_out, other, draws: int = 3):
    return audio_loss_gap(unet, build_noise_scheduler(exp.model), held_out, other, seed=0, draws=draws)


def test_trained_model_denoises_better_with_its_own_audio(toy, trained):
    exp, _, held_out, other = toy
    gap = _gap(exp, trained, held_out, other)
    assert gap.num_windows == TEST_CLIPS * TEST_WINDOWS
    assert gap.loss_true < gap.loss_other_audio, gap
    assert gap.gap_t > 3.0, gap  # paired over 128 held-out windows: p < 0.005 two-sided
    assert gap.win_rate > 0.6, gap


def test_no_gap_when_the_audio_cross_attention_is_cut(toy, trained):
    exp, _, held_out, other = toy
    cut = {n: p for n, p in trained.named_parameters() if ".attn_audio.to_out." in n}
    assert cut, "the UNet has no audio cross-attention output projections"
    saved = {n: p.detach().clone() for n, p in cut.items()}
    with torch.no_grad():
        for p in cut.values():
            p.zero_()  # the audio cross-attention now adds nothing to the residual stream
    try:
        gap = _gap(exp, trained, held_out, other, draws=1)
    finally:
        with torch.no_grad():
            for n, p in cut.items():
                p.copy_(saved[n])
    assert gap.loss_true == pytest.approx(gap.loss_other_audio, abs=1e-7)
    assert gap.gap_t == 0.0
