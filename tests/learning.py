"""The learnability check shared by tests/test_train_synthetic.py and benchmarks/learning_spread.py.

`run_learning(workdir, seed)` builds the synthetic step-local feature set (fdperf.synthetic.features)
with data seed `seed`, trains TSA and F+R on it with training seed `seed` (weights, batches,
exemplars), votes the last TSA weights again with ground-truth transitions (TSA-oracle, the same
exemplars), and returns the figures as a dict. `check_learning(m)` holds the test's assertions,
so that the measurement script judges every cell of its seed x threads x ISA matrix exactly as
the test does.
"""

import time

import torch

from fdperf.evaluate import evaluate
from fdperf.synthetic.features import make_synthetic_features
from fdperf.train import train
from fdperf.tsa.checkpoint import read_checkpoint

EPOCHS = 16
EVAL_EVERY = 8  # TSA is evaluated after epochs 8 and 16: best-vs-last is a real choice

# Thresholds and margins, from benchmarks/learning_spread.md: 30 runs = seeds 0-4 (data AND
# training seed) x {1 thread: native, FDPERF_DISABLE_AVX2=1, ONEDNN_MAX_CPU_ISA=AVX2 +
# ATEN_CPU_CAPABILITY=avx2 (+ MKL_ENABLE_INSTRUCTIONS=AVX2), ATEN_CPU_CAPABILITY=default;
# 2 threads: native, AVX2}, on a 2-core AMD EPYC with AVX-512. Every run ended with other weights
# (30 distinct hashes): each instruction-set or thread setting is another draw of training noise.
# (The AVX2 setting, seed 0, 1 thread, reproduces issue 9's AVX2-only AMD figures: TSA 0.967,
# oracle 0.959.)
#   rho TSA          0.749 .. 0.979  (mean 0.925, sd 0.051; at epoch 8 already 0.655 .. 0.930)
#   rho F+R         -0.035 .. 0.202  (the same figure for a seed on every setting)
#   TSA - F+R        0.687 .. 1.014  (mean 0.876)
#   oracle - TSA    -0.049 .. +0.051 (mean -0.002, sd 0.017; oracle < TSA in 16 of 30 runs)
# TSA floor 0.6: 0.15 under the lowest run and ~6 sd under the mean, yet 0.4 over the best F+R
# (a TSA that cannot use step-local features lands at F+R's -0.04 .. 0.20).
MIN_RHO_TSA = 0.6
# TSA must beat F+R by 0.4 (was 0.2): 0.29 under the smallest gap measured.
MIN_TSA_OVER_FR = 0.4
# Ground truth may not clearly hurt: oracle >= TSA - 0.08, ~4.7 sd of (oracle - TSA) under its
# mean and 0.03 under its lowest run. (The former `oracle >= TSA` was a coin flip: 16 of 30 runs
# fail it.) Caveat, measured too (learning_spread.py --sensitivity): on this synthetic set the
# oracle's rho barely depends on the transitions (a snippet early or late, or another video's:
# -0.05 .. +0.05 from the true ones over 6 runs; even snippet read as frame units: +0.007),
# because PSNet's units see the whole video; so this checks that the oracle path votes as well as
# the predicted one, not that transitions help. That they reach the model is checked
# deterministically in test_tsa_model.py (use_gt vs the reference) and test_vote_evaluate.py.
ORACLE_MARGIN = 0.08


def run_learning(workdir, seed: int = 0, threads: int | None = None) -> dict:
    """Trains TSA and F+R for EPOCHS epochs on a 64/48 synthetic split; returns the figures."""
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    store, ann = make_synthetic_features(workdir / "data", n_train=64, n_test=48, seed=seed)
    common = dict(
        max_epoch=EPOCHS,
        bs_train=4,
        base_lr=1e-3,
        voter_number=5,
        seed=seed,
        device="cpu",
        progress=False,
        log=lambda line: None,
    )
    tsa = train(store, ann, workdir / "tsa", method="TSA", eval_every=EVAL_EVERY, **common)
    fr = train(store, ann, workdir / "fr", method="F+R", eval_every=EPOCHS, **common)
    # TSA-oracle: the same last weights and the same exemplars (voting_exemplars' seed), with
    # ground-truth transitions instead of predicted ones (issue 5)
    oracle = evaluate(
        tsa.last_checkpoint,
        store,
        ann,
        workdir / "oracle",
        voter_number=5,
        seed=seed,
        transitions="oracle",
        device="cpu",
    )
    evaluated = [h for h in tsa.history if "test" in h]
    return {
        "seed": seed,
        "threads": torch.get_num_threads(),
        "rho_tsa": tsa.last["rho"],
        "rho_fr": fr.last["rho"],
        "rho_oracle": oracle.metrics["rho"],
        "aiou75_tsa": tsa.last["aiou75"],
        "aiou75_oracle": oracle.metrics["aiou75"],
        "evaluated": [(h["epoch"], h["test"]["rho"]) for h in evaluated],
        "best": dict(tsa.best),
        "last": dict(tsa.last),
        "best_checkpoint_epoch": read_checkpoint(tsa.best_checkpoint)["epoch"],
        "last_checkpoint_epoch": read_checkpoint(tsa.last_checkpoint)["epoch"],
        "seconds": time.perf_counter() - t0,
    }


def check_learning(m: dict) -> None:
    """The assertions of test_tsa_learns_step_local_scores_and_beats_feature_regression."""
    rho_tsa, rho_fr, rho_oracle = m["rho_tsa"], m["rho_fr"], m["rho_oracle"]
    # TSA learns the step-local score on held-out videos, F+R (snippet-averaged features)
    # cannot (margins: see the constants above).
    assert rho_tsa >= MIN_RHO_TSA, m
    assert rho_tsa > rho_fr + MIN_TSA_OVER_FR, m
    # Ground-truth transitions must not hurt the same weights (same exemplars) by more than the
    # measured noise (see ORACLE_MARGIN).
    assert rho_oracle >= rho_tsa - ORACLE_MARGIN, m
    assert m["aiou75_oracle"] == 100.0 and m["aiou75_tsa"] < 100.0, m
    # best (selected on test rho over the evaluated epochs 8 and 16) and last are reported apart,
    # labelled, with the checkpoints they name (with one evaluation, best == last could not fail)
    evaluated = m["evaluated"]
    assert [e for e, _ in evaluated] == list(range(EVAL_EVERY - 1, EPOCHS, EVAL_EVERY)), m
    best_epoch, best_rho = max(evaluated, key=lambda er: (er[1], -er[0]))
    assert m["best"]["epoch"] == best_epoch == m["best_checkpoint_epoch"], m
    assert m["best"]["rho"] == best_rho, m
    assert m["last"]["epoch"] == EPOCHS - 1 == m["last_checkpoint_epoch"], m
    assert m["last"]["rho"] == evaluated[-1][1] == rho_tsa, m
