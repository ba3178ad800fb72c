"""Preprocessing parity: the gather pipeline equals PIL NEAREST + crop + torchvision-style normalise."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fdperf.video import (
    MEAN,
    STD,
    JpegDecoder,
    gather_normalize,
    pil_nearest_tables,
    plan_aspect,
    plan_for,
    plan_reference,
    snippet_starts,
    to_snippets,
)


def _reference_frame(img: Image.Image, top=44, left=0, flip=False) -> torch.Tensor:
    """The reference's per-frame transform, with PIL and plain torch (ToTensor + Normalize)."""
    squashed = img.resize((112, 200), Image.NEAREST)
    if flip:
        squashed = squashed.transpose(Image.FLIP_LEFT_RIGHT)
    crop = squashed.crop((left, top, left + 112, top + 112))
    x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float().div(255)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _jpeg(h, w, seed):
    g = np.random.default_rng(seed)
    grad = np.linspace(0, 200, w)[None, :, None] + g.integers(0, 50, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(grad.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("hw", [(256, 455), (720, 1280), (37, 61)])
def test_index_table_is_pils(hw):
    h, w = hw
    coords = (np.arange(h)[:, None] * w + np.arange(w)[None, :]).astype(np.int32)
    resized = np.asarray(Image.fromarray(coords).resize((112, 200), Image.NEAREST))
    rows, cols = pil_nearest_tables((h, w), (200, 112))
    np.testing.assert_array_equal(resized, rows[:, None] * w + cols[None, :])


def test_table_is_not_the_naive_formula():
    # docs/design.md §3: one of the 200 rows differs from floor((i + 0.5) * in / out) at 256 -> 200.
    rows, _ = pil_nearest_tables((256, 455), (200, 112))
    naive = np.floor((np.arange(200) + 0.5) * 256 / 200).astype(int)
    assert (rows != naive).sum() == 1


def test_dali_pipeline_frames_equal_pil_on_the_same_decoded_image():
    # FineDiving-sized frames through DALI's CPU decoder, then the gather: the same values as
    # PIL's resize((112, 200), NEAREST) + centre crop rows 44..155 of the same decoded image.
    jpegs = [_jpeg(256, 455, s) for s in range(3)]
    frames = JpegDecoder("cpu", max_frames=3).decode([[np.frombuffer(j, np.uint8) for j in jpegs]])[0]
    assert frames.shape == (3, 256, 455, 3) and frames.dtype == torch.uint8
    clip = gather_normalize(frames, plan_reference(256, 455))
    assert clip.shape == (3, 3, 112, 112)
    for t in range(3):
        decoded = Image.fromarray(frames[t].numpy())
        assert torch.equal(clip[:, t], _reference_frame(decoded)), t
        # DALI's CPU JPEG decode is PIL's, bit for bit, on these baseline JPEGs (docs/design.md §10).
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(jpegs[t])).convert("RGB")), frames[t].numpy())


def test_training_view_matches_pil_flip_and_crop():
    img = Image.open(io.BytesIO(_jpeg(256, 455, 9))).convert("RGB")
    frames = torch.from_numpy(np.asarray(img).copy())[None]
    plan = plan_reference(256, 455, top=7, left=0, flip=True)
    assert torch.equal(gather_normalize(frames, plan)[:, 0], _reference_frame(img, top=7, flip=True))


def test_views_are_seeded_per_video():
    a = plan_for("reference", 256, 455, view=1, seed=0, key="01/3")
    b = plan_for("reference", 256, 455, view=1, seed=0, key="01/3")
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)
    plans = [plan_for("reference", 256, 455, view=v, seed=0, key="01/3") for v in range(8)]
    assert len({(p.rows[0], p.cols[0]) for p in plans}) > 1
    centre = plan_for("reference", 256, 455)
    assert np.array_equal(centre.rows, pil_nearest_tables((256, 455), (200, 112))[0][44:156])


def test_aspect_mode_keeps_the_aspect():
    img = Image.open(io.BytesIO(_jpeg(256, 455, 4))).convert("RGB")
    plan = plan_aspect(256, 455)
    assert len(plan.rows) == len(plan.cols) == 112
    ref = img.resize((int(112 * 455 / 256), 112), Image.NEAREST)  # 199 x 112
    left = int(round((ref.width - 112) / 2))
    expect = np.asarray(ref.crop((left, 0, left + 112, 112)))
    got = np.asarray(img)[plan.rows][:, plan.cols]
    np.testing.assert_array_equal(got, expect)


def test_snippets_layout():
    clips = torch.arange(2 * 96, dtype=torch.float32).view(2, 1, 96, 1, 1).expand(2, 3, 96, 2, 2)
    snips = to_snippets(clips, snippet_starts())
    assert snips.shape == (18, 3, 16, 2, 2)
    assert snips[0, 0, :, 0, 0].tolist() == list(range(16))
    assert snips[8, 0, 0, 0, 0] == 80 and snips[9, 0, 0, 0, 0] == 96  # video-major order


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="uint8 frames"):
        gather_normalize(torch.zeros(2, 10, 10, 3), plan_reference(10, 10))
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        plan_for("bicubic", 10, 10)
