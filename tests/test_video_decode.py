"""Decoding: DALI JPEG and VP9/MJPEG on the CPU, PyAV for H.264, frame selection, bad inputs."""

import io
import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from fdperf.video import (
    DaliVideoDecoder,
    DecodeError,
    JpegDecoder,
    SourceError,
    VideoError,
    VideoFile,
    decode_frames,
    folder_frame_indices,
    frame_folder,
    probe,
    video_frame_indices,
)

LEVEL = 6  # frame i is a flat grey of value LEVEL * i: the decoded brightness names the frame


def _write_video(path, codec, n=40, h=48, w=64, pix_fmt="yuv420p"):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for i in range(n):
            img = np.full((h, w, 3), (LEVEL * i) % 256, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


def _frame_ids(frames: torch.Tensor) -> list[int]:
    return [int(round(float(f.float().mean()) / LEVEL)) for f in frames]


def _jpeg(h, w, seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return np.frombuffer(buf.getvalue(), np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "vp9": _write_video(d / "a.webm", "libvpx-vp9"),
        "mjpeg": _write_video(d / "a.avi", "mjpeg", pix_fmt="yuvj420p"),
        "h264": _write_video(d / "a.mp4", "libx264"),
    }


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_dali_cpu_video_picks_frames(clips, codec):
    assert probe(clips[codec]) == (codec, 40)
    idx = np.array([0, 5, 5, 39, 12])
    (frames,) = DaliVideoDecoder("cpu", max_videos=2).decode([(np.fromfile(clips[codec], np.uint8), idx)])
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == torch.uint8
    assert _frame_ids(frames) == idx.tolist()


def test_h264_goes_through_pyav(clips):
    assert probe(clips["h264"]) == ("h264", 40)
    idx = np.array([39, 0, 7, 7])
    frames = torch.from_numpy(decode_frames(clips["h264"], idx))
    assert _frame_ids(frames) == idx.tolist()
    # DALI cannot decode H.264 on the CPU (docs/design.md §10): a per-video error, not a crash.
    out = DaliVideoDecoder("cpu").decode([(np.fromfile(clips["h264"], np.uint8), idx)])
    assert isinstance(out[0], DecodeError)


def test_truncated_video_is_an_error(clips, tmp_path):
    data = open(clips["vp9"], "rb").read()
    bad = tmp_path / "cut.webm"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="cut.webm"):
        decode_frames(bad, [0, 39])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(VideoError, match="cannot open video"):
        probe(garbage)


def test_jpeg_batches_and_bad_frame_isolation():
    dec = JpegDecoder("cpu", max_frames=8)
    a = [_jpeg(24, 40, s) for s in range(3)]
    b = [_jpeg(30, 20, s) for s in range(2)]  # another frame size in the same batch
    bad = [a[0], a[1][: len(a[1]) // 2]]  # a truncated JPEG
    out = dec.decode([a, bad, b])
    assert out[0].shape == (3, 24, 40, 3) and out[2].shape == (2, 30, 20, 3)
    assert isinstance(out[1], DecodeError)
    for t in range(3):
        assert np.array_equal(out[0][t].numpy(), np.asarray(Image.open(io.BytesIO(a[t].tobytes()))))
    with pytest.raises(ValueError, match="holds 8"):
        dec.decode([a, a, a])


def test_folder_sampling_is_the_reference_formula(tmp_path):
    # Frames numbered from 3 (as in the released folders): linspace over numbers, minus the first.
    names = [f"{i:05d}.jpg" for i in range(3, 3 + 137)]
    expect = np.linspace(3, 139, 96).astype(int) - 3
    np.testing.assert_array_equal(folder_frame_indices(names), expect)
    short = folder_frame_indices([f"{i:05d}.jpg" for i in range(50)])
    assert len(short) == 96 and short.max() == 49 and len(np.unique(short)) == 50  # repeats
    gaps = folder_frame_indices(["00001.jpg", "00002.jpg", "00009.jpg"])
    assert gaps.max() == 2


def test_frame_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="frame folder not found"):
        frame_folder(str(tmp_path), ("01", 1))
    os.makedirs(tmp_path / "01" / "2")
    with pytest.raises(SourceError, match="no JPEG frames"):
        frame_folder(str(tmp_path), ("01", 2))


def test_untrimmed_bounds():
    src = VideoFile(("01", 1), "x.mp4", start=100, end=290)
    np.testing.assert_array_equal(video_frame_indices(src, 1000), np.linspace(100, 290, 96).astype(int))
    with pytest.raises(SourceError, match="past the video"):
        video_frame_indices(src, 200)


def test_deep_instances_seek_and_match_sequential_decoding(tmp_path):
    from fdperf.video import pyav_decode

    path = str(tmp_path / "long.mp4")
    with av.open(path, "w") as c:  # 600 frames, a key frame every 50: an "untrimmed" video
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size = 50
        for i in range(600):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0], img[..., 1] = i % 256, (i // 256) * 60
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    idx = np.linspace(300, 590, 96).astype(int)
    assert idx.min() >= pyav_decode.SEEK_MIN_FRAMES
    assert pyav_decode._decode_seeking(path, set(idx.tolist())) is not None  # the seek path ran
    sequential = pyav_decode._decode_from_start(path, set(idx.tolist()))
    np.testing.assert_array_equal(decode_frames(path, idx), np.stack([sequential[i] for i in idx]))
    with pytest.raises(VideoError, match="ends before frame 600"):
        decode_frames(path, [400, 600])


def test_parallel_decoders_keep_batch_order():
    from fdperf.video import ParallelDecoder

    pool = ParallelDecoder(lambda: JpegDecoder("cpu", max_frames=4), 2)
    try:
        batches = [[[_jpeg(16 + 8 * b, 24, b)]] for b in range(5)]  # frame height names the batch
        futures = [pool.submit(b) for b in batches]
        heights = [f.result()[0].shape[1] for f in futures]
    finally:
        pool.close()
    assert heights == [16, 24, 32, 40, 48]
