"""`fdperf score` end to end: a synthetic H.264 dive scored against a small exemplar store equals
`fdperf.evaluate` on the same video; untrimmed cuts, frame folders, batches and errors.

Random-init I3D with one snippet per video and four dives keep it to a few seconds of I3D.
"""

import csv
import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from fdperf.__main__ import main as fdperf_main
from fdperf.evaluate import evaluate
from fdperf.extract import ExtractOptions, Inputs, extract_features
from fdperf.score.__main__ import main as score_main
from fdperf.synthetic import DiveRenderer, sample_dives, split_dives, write_annotations
from fdperf.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
PAD = 20  # frames before the dive in the "untrimmed" video


def _frames(dive):
    return [f[:, :454] for f in DiveRenderer(dive.plan).frames()]  # even width for yuv420p


def _write_h264(path, frames):
    # lossless (qp 0): the same frame decodes to the same pixels in any video, so a dive cut
    # from a longer video gives exactly the features of the dive on its own
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"qp": "0"})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    dives = sample_dives(8, seed=0)  # two dive numbers: 3 train, 1 test each
    train_keys, test_keys = split_dives(dives, seed=0)
    ann = str(root / "Annotations")
    write_annotations(ann, dives, train_keys, test_keys)
    videos = {d.key: _write_h264(root / f"{d.key[0]}_{d.key[1]}.mp4", _frames(d)) for d in dives}
    store = str(root / "features.h5")
    with pytest.warns(UserWarning, match="random"):
        extract_features(
            store,
            [d.key for d in dives],
            Inputs(video_list={k: (v, None, None) for k, v in videos.items()}),
            random_init=True,
            options=ExtractOptions(device="cpu", num_snippets=1, progress=False, batch_videos=4),
        )
    # two epochs: a freshly initialised TSA gives every video the same deltas (its batch norms
    # hold default statistics), which would let a wrong query feature pass unnoticed
    ckpt = train(
        store,
        ann,
        root / "run",
        max_epoch=2,
        bs_train=2,
        voter_number=2,
        layout="spatial",
        device="cpu",
        progress=False,
        log=lambda line: None,
    ).last_checkpoint
    # the first test dive: fdperf.evaluate draws its exemplars first, from a fresh generator
    query = next(d for d in dives if d.key == test_keys[0])
    return dict(
        root=root,
        ann=ann,
        store=store,
        ckpt=str(ckpt),
        video=videos[query.key],
        query=query,
        dn=query.plan.kind.dive_number.upper(),
    )


def _args(s, *inputs, out=None, extra=()):
    args = [
        *map(str, inputs),
        "--dive-number",
        s["dn"],
        "--checkpoint",
        s["ckpt"],
        "--store",
        s["store"],
        "--annotations",
        s["ann"],
        "--random-init",
        "--voter-number",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    return args + (["--out", str(out)] if out else [])


def test_score_equals_evaluate_on_the_same_video(setup, tmp_path, capsys):
    s = setup
    ev = evaluate(s["ckpt"], s["store"], s["ann"], tmp_path / "ev", voter_number=2, device="cpu")
    with open(ev.predictions_path, newline="") as f:
        row = list(csv.DictReader(f))[0]
    assert score_main(_args(s, s["video"], out=tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "scores.json").read_text())
    (dive,) = doc["dives"]
    assert dive["score"] == pytest.approx(float(ev.votes.scores[0]), abs=1e-4)
    # the test dives' scores differ: the score depends on the dive's own features
    assert abs(float(ev.votes.scores[0]) - float(ev.votes.scores[1])) > 1e-2
    assert [e["key"] for e in dive["exemplars"]] == row["exemplar_keys"].split(";")
    assert [e["delta"] for e in dive["exemplars"]] == pytest.approx(
        [float(x) for x in row["deltas"].split(";")], abs=1e-4
    )
    assert dive["score"] == pytest.approx(np.mean([e["vote"] for e in dive["exemplars"]]), abs=1e-5)
    t = [int(row["pred_t1"]), int(row["pred_t2"])]
    assert dive["transitions_sampled"] == t
    n = s["query"].frame_labels.size  # frames of the video
    frames = np.linspace(0, n - 1, 96).astype(int)
    assert dive["transition_frames"] == [int(frames[i]) for i in t]
    assert [st["first_frame"] for st in dive["steps"]] == [0] + dive["transition_frames"]
    assert [st["relative_score"] for st in dive["steps"]] == pytest.approx(
        [np.mean([float(x) for x in row[f"step{k}_deltas"].split(";")]) for k in (1, 2, 3)], abs=1e-4
    )
    assert os.path.getsize(dive["png"]) > 10_000
    assert f"{dive['score']:8.2f}" in printed and s["dn"].lower() in printed


def test_untrimmed_cut_maps_transitions_to_the_long_video(setup, tmp_path):
    s = setup
    frames = _frames(s["query"])
    dark = [np.zeros_like(frames[0])] * PAD
    long = _write_h264(tmp_path / "broadcast.mp4", dark + frames + dark[:5])
    assert fdperf_main(["score", *_args(s, s["video"], out=tmp_path / "a")]) == 0
    assert (
        score_main(
            _args(
                s, long, out=tmp_path / "b", extra=("--start", str(PAD), "--end", str(PAD + len(frames) - 1))
            )
        )
        == 0
    )
    (a,) = json.loads((tmp_path / "a" / "scores.json").read_text())["dives"]
    (b,) = json.loads((tmp_path / "b" / "scores.json").read_text())["dives"]
    assert b["score"] == pytest.approx(a["score"], abs=1e-5)
    assert b["transition_frames"] == [f + PAD for f in a["transition_frames"]]
    assert (b["start"], b["end"]) == (PAD, PAD + len(frames) - 1)


def test_frame_folder_reports_frame_numbers_of_its_files(setup, tmp_path):
    s = setup
    folder = tmp_path / "frames" / "dive7"
    folder.mkdir(parents=True)
    for i, img in enumerate(_frames(s["query"])):
        Image.fromarray(img).save(folder / f"{500 + i:05d}.jpg", quality=90)
    assert score_main(_args(s, folder, out=tmp_path / "out")) == 0
    (d,) = json.loads((tmp_path / "out" / "scores.json").read_text())["dives"]
    n = s["query"].frame_labels.size
    assert d["kind"] == "frames" and all(500 <= f < 500 + n for f in d["transition_frames"])
    assert d["steps"][0]["first_frame"] == 500 and d["steps"][-1]["last_frame"] == 500 + n - 1


def test_batch_records_a_broken_video_and_exits_1(setup, tmp_path, capsys):
    s = setup
    batch = tmp_path / "batch"
    batch.mkdir()
    os.symlink(s["video"], batch / "good.mp4")
    (batch / "broken.mp4").write_bytes(b"not a video at all" * 50)
    assert score_main(_args(s, batch, out=tmp_path / "out")) == 1
    dives = {d["name"]: d for d in json.loads((tmp_path / "out" / "scores.json").read_text())["dives"]}
    assert "broken.mp4" in dives["broken.mp4"]["error"] and "score" not in dives["broken.mp4"]
    assert isinstance(dives["good.mp4"]["score"], float)
    assert "broken.mp4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.__setitem__(a.index("--dive-number") + 1, "999X"), "dive number 999X"),
        (lambda a: a.__setitem__(0, "/nonexistent/dive.mp4"), "input not found: /nonexistent/dive.mp4"),
        (
            lambda a: a.__setitem__(a.index("--random-init"), "--weights=/nonexistent/i3d.pth"),
            "/nonexistent/i3d.pth",
        ),
        (lambda a: a.extend(["--start", "5"]), "give both --start and --end"),
    ],
)
def test_errors_are_one_line_naming_the_file_or_value(setup, capsys, change, message):
    args = _args(setup, setup["video"])
    change(args)
    assert score_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_single_broken_video_is_an_error_naming_it(setup, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert score_main(_args(setup, bad)) == 2
    assert str(bad) in capsys.readouterr().err
