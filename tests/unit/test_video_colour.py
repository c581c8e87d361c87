"""Colour fidelity of the mp4 round trip: ``write_video`` (RGB -> BT.601 limited-range YUV 4:2:0 in numpy,
stream tagged) read back by the dataset reader (``frame_to_rgb``: swscale with accurate rounding, honouring
the frame's colour tags).

Measured at 32x32 on synthetic frames (classes 0, 5, 10; 12 frames each; crf 18), compared with the input:
the old path (swscale's default RGB -> YUV on write, ``to_ndarray(format="rgb24")`` on read) gave PSNR mean
33.1-33.3 dB / min 27.8-27.9 dB and per-channel bias about (-1.0, -1.5, -0.7)/255; this one gives mean
36.0-36.4 dB / min 31.2 dB and bias within 0.25/255 (x264 varies a little from run to run).
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from asva_model.data.config import SamplingConfig
from asva_model.data.decode import frame_to_rgb
from asva_model.data.sampling import sample_clip
from asva_model.video_io import rgb_to_yuv420p, write_video
from asva_platform.dev.synth import make_spec, render_window

SIDE = 32
PSNR_MEAN_FLOOR = 35.0  # old path: at most 33.3 dB; this one: at least 36.0 dB
PSNR_MIN_FLOOR = 30.0  # old path: 27.9 dB; this one: 31.2 dB
MAX_BIAS = 0.5  # per channel, in 1/255 steps; the old path is biased by about -1 to -1.5

# (Kr, Kb) of the matrices the reader must honour.
BT601, BT709, BT2020 = (0.299, 0.114), (0.2126, 0.0722), (0.2627, 0.0593)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def _bias(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    return (decoded.astype(np.float64) - original.astype(np.float64)).reshape(-1, 3).mean(axis=0)


def _read_rgb(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame_to_rgb(f) for f in container.decode(video=0)])


def _synthetic_frames(class_idx: int) -> np.ndarray:
    """12 uint8 (32, 32, 3) frames of a synthetic clip, as the sampler shapes them."""
    frames, _, _ = render_window(make_spec(0, class_idx, 0), 0.0, SamplingConfig(image_size=[SIDE, SIDE]))
    return np.clip(np.rint(frames.transpose(1, 2, 3, 0) * 255.0), 0, 255).astype(np.uint8)


def _ycbcr(rgb: np.ndarray, kr_kb: tuple[float, float], full: bool) -> np.ndarray:
    """Float Y, Cb, Cr of RGB triples (..., 3) under a matrix and range (the test's own reference)."""
    kr, kb = kr_kb
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    if full:
        return np.stack([y, 128 + cb, 128 + cr], axis=-1)
    return np.stack([16 + y * 219 / 255, 128 + cb * 224 / 255, 128 + cr * 224 / 255], axis=-1)


def _rgb(ycbcr: np.ndarray, kr_kb: tuple[float, float], full: bool) -> np.ndarray:
    """Inverse of :func:`_ycbcr`, float."""
    kr, kb = kr_kb
    y, cb, cr = (ycbcr[..., i].astype(np.float64) for i in range(3))
    if full:
        cb, cr = cb - 128, cr - 128
    else:
        y, cb, cr = (y - 16) * 255 / 219, (cb - 128) * 255 / 224, (cr - 128) * 255 / 224
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.stack([r, g, b], axis=-1)


# ---------------------------------------------------------------------------------------------
# Writer: the conversion itself


def test_rgb_to_yuv420p_uses_bt601_limited_range():
    # BT.601 limited-range codes of the primaries (Rec. 601 tables): white, black, red, green, blue.
    for rgb, yuv in [
        ((255, 255, 255), (235, 128, 128)),
        ((0, 0, 0), (16, 128, 128)),
        ((255, 0, 0), (81, 90, 240)),
        ((0, 255, 0), (145, 54, 34)),
        ((0, 0, 255), (41, 240, 110)),
    ]:
        planes = rgb_to_yuv420p(np.broadcast_to(np.array(rgb, np.uint8), (4, 6, 3)))
        assert planes.shape == (6, 6) and planes.dtype == np.uint8
        assert (planes[:4] == yuv[0]).all(), rgb
        assert (planes[4:5] == yuv[1]).all() and (planes[5:6] == yuv[2]).all(), rgb


def test_rgb_to_yuv420p_chroma_is_the_mean_of_each_2x2_block():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    planes = rgb_to_yuv420p(img)
    exact = _ycbcr(img, BT601, full=False)
    assert np.abs(planes[:8] - exact[..., 0]).max() <= 0.5 + 1e-9
    block = exact.reshape(4, 2, 5, 2, 3).mean(axis=(1, 3))
    u, v = planes[8:10].reshape(4, 5), planes[10:12].reshape(4, 5)
    assert np.abs(u - block[..., 1]).max() <= 0.5 + 1e-9
    assert np.abs(v - block[..., 2]).max() <= 0.5 + 1e-9
    # the layout VideoFrame.from_ndarray(format="yuv420p") expects: Y, then the Cb plane, then the Cr plane
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    assert (frame.width, frame.height) == (10, 8)
    cb = np.frombuffer(frame.planes[1], np.uint8).reshape(4, -1)[:, :5]
    assert np.array_equal(cb, u)


# ---------------------------------------------------------------------------------------------
# Reader: accurate conversion that follows the frame's tags


@pytest.mark.parametrize(
    "colorspace, color_range, matrix, full",
    [
        (2, 0, BT601, False),  # untagged: BT.601 limited range
        (6, 1, BT601, False),  # SMPTE 170M, limited (what write_video tags)
        (5, 2, BT601, True),  # BT.470BG, full range
        (1, 1, BT709, False),
        (1, 2, BT709, True),
        (9, 1, BT2020, False),
    ],
)
def test_frame_to_rgb_is_accurate_and_follows_the_tags(colorspace, color_range, matrix, full):
    rng = np.random.default_rng(colorspace * 10 + color_range)
    colours = rng.integers(25, 231, (40, 3))
    codes = np.clip(np.floor(_ycbcr(colours, matrix, full) + 0.5), 0, 255)
    expected = _rgb(codes, matrix, full)
    keep = ((expected > 0.5) & (expected < 254.5)).all(axis=1)  # no clipping in the reference
    wrong = BT709 if matrix == BT601 else BT601
    max_err, max_wrong = 0.0, 0.0
    for (y, u, v), want in zip(codes[keep], expected[keep]):
        planes = np.concatenate([np.full((16, 16), y), np.full((4, 16), u), np.full((4, 16), v)]).astype(
            np.uint8
        )
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.colorspace, frame.color_range = colorspace, color_range
        got = frame_to_rgb(frame)
        assert got.shape == (16, 16, 3) and got.dtype == np.uint8
        max_err = max(max_err, float(np.abs(got.astype(np.float64) - want).max()))
        max_wrong = max(max_wrong, float(np.abs(got - _rgb(np.array([y, u, v]), wrong, full)).max()))
    assert keep.sum() >= 20
    assert max_err <= 0.6  # correct rounding (the default swscale path is off by up to 2.7)
    assert max_wrong > 2.0  # the test tells the matrices apart


# ---------------------------------------------------------------------------------------------
# Round trip through the mp4


def test_flat_colour_patches_round_trip_without_bias(tmp_path):
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (24, 2, 2, 3), dtype=np.uint8)  # 96 colours, 16x16 patches
    frames = np.repeat(np.repeat(colours, 16, 1), 16, 2)
    decoded = _read_rgb(write_video(tmp_path / "flat.mp4", frames, fps=6))
    assert decoded.shape == frames.shape
    inner = np.zeros((SIDE, SIDE), bool)  # patch interiors: away from the edges 4:2:0 and the codec blur
    inner[2:14], inner[18:30] = True, True
    inner &= inner.T
    bias = _bias(decoded[:, inner], frames[:, inner])
    assert np.abs(bias).max() <= MAX_BIAS, bias
    err = np.abs(decoded[:, inner].astype(np.int16) - frames[:, inner]).mean()
    assert err <= 1.0, err  # old path: 1.2; this one: 0.7
    assert np.abs(_bias(decoded, frames)).max() <= MAX_BIAS


def test_synthetic_frames_round_trip_at_32px(tmp_path):
    psnrs, biases = [], []
    for class_idx in (0, 5, 10):
        frames = _synthetic_frames(class_idx)
        decoded = _read_rgb(write_video(tmp_path / f"{class_idx}.mp4", frames, fps=6))
        assert decoded.shape == frames.shape
        psnrs += [_psnr(d, f) for d, f in zip(decoded, frames)]
        biases.append(_bias(decoded, frames))
    bias = np.mean(biases, axis=0)
    assert np.abs(bias).max() <= MAX_BIAS, bias
    assert np.mean(psnrs) >= PSNR_MEAN_FLOOR, np.mean(psnrs)
    assert np.min(psnrs) >= PSNR_MIN_FLOOR, np.min(psnrs)


def test_dataset_reader_reads_written_clip_back(tmp_path):
    frames = _synthetic_frames(3)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    path = write_video(tmp_path / "clip.mp4", frames, wave, fps=6)
    clip = sample_clip(path, 0.0, SamplingConfig(image_size=[SIDE, SIDE]))
    got = np.rint(clip.frames.transpose(1, 2, 3, 0) * 255.0)  # (3, f, H, W) in [0, 1] -> (f, H, W, 3)
    assert got.shape == frames.shape
    assert np.abs(_bias(got, frames)).max() <= MAX_BIAS
    assert np.mean([_psnr(g, f) for g, f in zip(got, frames)]) >= PSNR_MEAN_FLOOR


def test_the_authors_protocol_reads_colours_as_torchvision_does(tmp_path):
    """`colour_conversion: authors` keeps swscale's default path (the official reader's), biased dark."""
    frames = _synthetic_frames(3)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    path = write_video(tmp_path / "clip.mp4", frames, wave, fps=6)
    sampled = {
        mode: np.rint(
            sample_clip(path, 0.0, SamplingConfig(image_size=[SIDE, SIDE], colour_conversion=mode)).frames
            * 255
        )
        for mode in ("accurate", "authors")
    }
    with av.open(str(path)) as c:
        default = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert np.array_equal(sampled["authors"].transpose(1, 2, 3, 0), default.astype(float))
    authors_bias = _bias(sampled["authors"].transpose(1, 2, 3, 0), frames)
    assert authors_bias.min() < -MAX_BIAS  # the bias `accurate` removes
    assert np.abs(_bias(sampled["accurate"].transpose(1, 2, 3, 0), frames)).max() <= MAX_BIAS


# ---------------------------------------------------------------------------------------------
# What the file says about its colour


def _read_ue(bits: str, pos: int) -> tuple[int, int]:
    zeros = 0
    while bits[pos + zeros] == "0":
        zeros += 1
    value = int(bits[pos + zeros : pos + 2 * zeros + 1], 2) - 1
    return value, pos + 2 * zeros + 1


def _sps_vui(extradata: bytes) -> dict[str, int]:
    """The colour fields of the H.264 SPS's VUI in an avcC record (enough of the SPS for x264's output)."""
    assert extradata[0] == 1 and extradata[5] & 0x1F >= 1, "not an avcC record with an SPS"
    nal = extradata[8 : 8 + int.from_bytes(extradata[6:8], "big")]
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # drop emulation-prevention bytes
    bits = "".join(f"{b:08b}" for b in rbsp)
    profile, pos = rbsp[0], 24
    _, pos = _read_ue(bits, pos)  # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format, pos = _read_ue(bits, pos)
        pos += chroma_format == 3
        _, pos = _read_ue(bits, pos)
        _, pos = _read_ue(bits, pos)
        assert bits[pos + 1] == "0", "scaling matrices are not parsed here"
        pos += 2
    _, pos = _read_ue(bits, pos)  # log2_max_frame_num_minus4
    poc_type, pos = _read_ue(bits, pos)
    assert poc_type in (0, 2), "pic_order_cnt_type 1 is not parsed here"
    if poc_type == 0:
        _, pos = _read_ue(bits, pos)
    _, pos = _read_ue(bits, pos)  # max_num_ref_frames
    pos += 1
    _, pos = _read_ue(bits, pos)
    _, pos = _read_ue(bits, pos)
    frame_mbs_only = bits[pos] == "1"
    pos += 1 if frame_mbs_only else 2
    pos += 1  # direct_8x8_inference_flag
    if bits[pos] == "1":  # frame_cropping_flag
        pos += 1
        for _ in range(4):
            _, pos = _read_ue(bits, pos)
    else:
        pos += 1
    assert bits[pos] == "1", "no VUI"
    pos += 1
    if bits[pos] == "1":  # aspect_ratio_info_present_flag
        pos += 9 + (32 if int(bits[pos + 1 : pos + 9], 2) == 255 else 0)
    else:
        pos += 1
    pos += 2 if bits[pos] == "1" else 1  # overscan
    out: dict[str, int] = {}
    if bits[pos] == "1":  # video_signal_type_present_flag
        out["full_range"] = int(bits[pos + 4])
        if bits[pos + 5] == "1":
            out["primaries"] = int(bits[pos + 6 : pos + 14], 2)
            out["transfer"] = int(bits[pos + 14 : pos + 22], 2)
            out["matrix"] = int(bits[pos + 22 : pos + 30], 2)
            pos += 30
        else:
            pos += 6
    else:
        pos += 1
    if bits[pos] == "1":  # chroma_loc_info_present_flag
        out["chroma_loc"], pos = _read_ue(bits, pos + 1)
    return out


def test_stream_carries_the_colour_tags(tmp_path):
    path = write_video(tmp_path / "tags.mp4", _synthetic_frames(0), fps=6)
    with av.open(str(path)) as container:
        cc = container.streams.video[0].codec_context
        assert cc.name == "h264" and cc.format.name == "yuv420p"
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (6, 6, 6, 1)
        vui = _sps_vui(bytes(cc.extradata))
        frame = next(container.decode(video=0))
        assert (frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range) == (6, 6, 6, 1)
    # H.264 VUI: SMPTE 170M primaries / transfer / matrix, limited range, chroma sited at the block centre
    assert vui == {"full_range": 0, "primaries": 6, "transfer": 6, "matrix": 6, "chroma_loc": 1}
    # mp4 `colr` box: nclx, the same three codes, full_range_flag clear
    data = path.read_bytes()
    at = data.find(b"colrnclx")
    assert at > 0
    assert data[at + 8 : at + 15] == bytes([0, 6, 0, 6, 0, 6, 0])


def test_odd_sizes_are_padded_and_audio_kept(tmp_path):
    rendered, _, _ = render_window(make_spec(0, 7, 0), 0.0, SamplingConfig(image_size=[40, 40]))
    rendered = np.clip(np.rint(rendered.transpose(1, 2, 3, 0) * 255.0), 0, 255).astype(np.uint8)
    frames = np.ascontiguousarray(rendered[:4, 3:34, 2:35])  # (4, 31, 33, 3)
    path = write_video(tmp_path / "out" / "odd.mp4", frames, np.zeros(8000, np.float32), fps=6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["odd.mp4"]  # no .part left
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        assert container.streams.video[0].codec_context.format.name == "yuv420p"
    decoded = _read_rgb(path)
    assert decoded.shape == (4, 32, 34, 3)  # padded to even by edge replication
    padded = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert np.mean([_psnr(d, f) for d, f in zip(decoded, padded)]) >= PSNR_MEAN_FLOOR
    assert np.abs(_bias(decoded, padded)).max() <= MAX_BIAS
