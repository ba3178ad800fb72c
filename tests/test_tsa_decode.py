"""Ordered transition decoding against a brute-force oracle; the decode option of the models;
what each decoder can represent on the real FineDiving labels."""

import itertools

import numpy as np
import pytest
import torch

from fdperf.ops import window_argmax
from fdperf.tsa import build_model, choose_bounds
from fdperf.tsa.decode import decode_transitions, ordered_transitions, representable


def oracle(scores, min_index=1):
    """Every strictly increasing tuple; the first (lexicographically smallest) of maximal total.
    Sums right to left, as the dynamic programme adds them, so equal totals compare equal."""
    B, T, L = scores.shape
    out = []
    for b in range(B):
        best, arg = None, None
        for ts in itertools.combinations(range(min_index, T), L):  # lexicographic order
            total = scores[b, ts[-1], L - 1]
            for k in range(L - 2, -1, -1):
                total = scores[b, ts[k], k] + total
            if best is None or total > best:
                best, arg = total, ts
        out.append(arg)
    return torch.tensor(out, dtype=torch.long)


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_matches_oracle_random(L):
    g = torch.Generator().manual_seed(L)
    for _ in range(3):
        T = int(torch.randint(L + 1, 13, (1,), generator=g))
        scores = torch.randn(4, T, L, generator=g, dtype=torch.float64)
        assert torch.equal(ordered_transitions(scores), oracle(scores))


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_ties_go_to_the_earliest_tuple(L):
    g = torch.Generator().manual_seed(10 + L)
    for T in (L + 1, L + 3, 11):
        # few distinct integer values: many optimal tuples, summed exactly in float32
        scores = torch.randint(0, 3, (6, T, L), generator=g).float()
        assert torch.equal(ordered_transitions(scores), oracle(scores))
    flat = torch.zeros(2, 10, L)
    assert ordered_transitions(flat).tolist() == [list(range(1, L + 1))] * 2


def test_min_index_zero_and_bounds():
    scores = torch.randn(3, 9, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(ordered_transitions(scores, 0), oracle(scores, 0))
    out = ordered_transitions(torch.randn(5, 96, 2))
    assert ((out[:, 0] >= 1) & (out[:, 1] > out[:, 0]) & (out[:, 1] < 96)).all()
    with pytest.raises(ValueError, match="cannot place 3"):
        ordered_transitions(torch.zeros(1, 3, 3))


def test_log_of_zero_probabilities():
    probs = torch.zeros(2, 20, 2)
    # the peaks in the wrong order: one peak and a zero either way, an exact tie -> earliest
    probs[0, 15, 0] = probs[0, 5, 1] = 0.9
    probs[1, 0, 0] = probs[1, 19, 1] = 0.9  # t1 = 0 is not allowed (min_index 1)
    assert decode_transitions(probs, "ordered").tolist() == [[1, 5], [1, 19]]


def test_ordered_places_a_late_dive_the_window_cannot():
    probs = torch.full((1, 96, 2), 0.01)
    probs[0, 60, 0], probs[0, 80, 1] = 0.9, 0.9  # flight starts late: t1 in the second half
    assert decode_transitions(probs, "ordered").tolist() == [[60, 80]]
    assert decode_transitions(probs, "window").tolist()[0][0] < 48
    assert torch.equal(decode_transitions(probs, "window"), window_argmax(probs))


def test_traceable_without_graph_breaks():
    # fullgraph tracing fails on a host sync (.item(), data-dependent shapes): the CUDA-graph rule
    fn = torch.compile(ordered_transitions, backend="eager", fullgraph=True)
    scores = torch.randn(3, 96, 2)
    assert torch.equal(fn(scores), ordered_transitions(scores))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for graph capture")
def test_cuda_graph_capture():
    scores = torch.randn(8, 96, 3, device="cuda")
    out = ordered_transitions(scores)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ordered_transitions(scores)
    new = torch.randn(8, 96, 3, device="cuda")
    scores.copy_(new)
    graph.replay()
    assert torch.equal(out, ordered_transitions(new))


def test_models_store_and_use_the_decoding():
    probs = torch.full((1, 96, 2), 0.01)
    probs[0, 60, 0], probs[0, 80, 1] = 0.9, 0.9
    assert choose_bounds(probs, None, False, "ordered").tolist() == [[60, 80]]
    for method in ("TSA", "F+S+R"):
        model = build_model(method, decode="ordered")
        assert model.config()["decode"] == "ordered"
        assert build_model(method, **model.config()).decode == "ordered"
        assert build_model(method).decode == "window"
        assert "decode" not in build_model(method).config()  # older checkpoints' exact config
    with pytest.raises(ValueError, match="unknown transition decoding"):
        build_model("TSA", decode="viterbi")


def test_representable():
    b = np.array([[10, 60], [50, 70], [10, 40], [0, 60], [30, 30]])
    assert representable(b, "window").tolist() == [True, False, False, False, False]
    assert representable(b, "ordered").tolist() == [True, True, True, False, False]


def test_real_annotations_shares(real_annotations_dir):
    from fdperf.data import load_annotations

    ann = load_annotations(real_annotations_dir)
    t = np.stack([s.transitions for s in ann.samples.values()])
    assert len(t) == 3000
    assert int((t[:, 0] >= 48).sum()) == 108 and int((t[:, 1] < 48).sum()) == 98
    assert int((~representable(t, "window")).sum()) == 206
    assert bool(representable(t, "ordered").all())
