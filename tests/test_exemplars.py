"""Exemplar sampling for training (tensor ops) and voting (deterministic per seed)."""

import pytest
import torch

from fdperf import data


@pytest.fixture
def ann(small_annotations):
    return data.load_annotations(small_annotations[0])


def test_training_sampler_same_dive_number_never_self(ann):
    keys = ann.keys()  # 3 x 107b, 3 x 205c, 2 x 405b
    sampler = data.ExemplarSampler(ann, keys, "dive_number")
    q = torch.arange(len(keys)).repeat(200)
    e = sampler.sample(q, torch.Generator().manual_seed(1))
    assert (e != q).all()
    dn = [ann[k].dive_number for k in keys]
    assert all(dn[a] == dn[b] for a, b in zip(q.tolist(), e.tolist()))
    # every other member of the group is reachable
    pairs = set(zip(q.tolist(), e.tolist()))
    assert {(0, 1), (0, 2), (1, 0), (1, 2), (6, 7), (7, 6)} <= pairs


def test_training_sampler_is_deterministic_and_policies(ann):
    keys = ann.keys()
    q = torch.arange(len(keys))
    for policy in data.POLICIES:
        s = data.ExemplarSampler(ann, keys, policy)
        a = s.sample(q, torch.Generator().manual_seed(3))
        b = s.sample(q, torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and (a != q).all()
    dd = data.ExemplarSampler(ann, keys, "difficulty").sample(q.repeat(50), torch.Generator().manual_seed(0))
    diff = [ann[k].difficulty for k in keys]
    assert all(diff[a] == diff[b] for a, b in zip(q.repeat(50).tolist(), dd.tolist()))
    with pytest.raises(ValueError, match="unknown exemplar policy"):
        data.ExemplarSampler(ann, keys, "nope")


def test_singleton_group_pairs_with_itself(small_annotations, tmp_path):
    from conftest import write_annotation_set

    samples = {
        ("a", 1): ("107b", 1.0, 3.0, [30, 30, 30], [1, 2, 3]),
        ("a", 2): ("205c", 2.0, 3.0, [30, 30, 30], [1, 2, 3]),
    }
    ann = data.load_annotations(write_annotation_set(str(tmp_path / "s"), samples, list(samples), []))
    s = data.ExemplarSampler(ann, ann.keys(), "dive_number")
    assert s.sample(torch.tensor([0, 1])).tolist() == [0, 1]


def test_voting_exemplars(ann):
    train, test = ann.train_keys, ann.test_keys
    rows, valid = data.voting_exemplars(ann, test, train, m=10, seed=0)
    rows2, _ = data.voting_exemplars(ann, test, train, m=10, seed=0)
    assert torch.equal(rows, rows2) and rows.shape == (3, 10)
    for i, key in enumerate(test):
        chosen = [train[r] for r in rows[i][valid[i]].tolist()]
        same = [k for k in train if ann[k].dive_number == ann[key].dive_number]
        assert sorted(chosen) == sorted(same)  # pools are smaller than M: all of them, once
    with pytest.raises(ValueError, match="no training exemplar for query"):
        data.voting_exemplars(ann, test, train[:1], m=10)


def test_sample_tensors(ann):
    t = data.sample_tensors(ann, ann.test_keys)
    assert t["score"].dtype == torch.float32 and t["transitions"].shape == (3, 2)
    assert t["transitions"].tolist() == [ann[k].transitions.tolist() for k in ann.test_keys]
