"""Learnability on a synthetic feature set whose score depends on step-local features
(fdperf.synthetic.features): TSA learns it on held-out videos, F+R (snippet-averaged features) cannot,
and ground-truth transitions at test time (TSA-oracle) do not score worse than predicted ones.

CPU training is not bitwise the same on another processor, so the thresholds (tests/learning.py)
carry margins measured over seeds 0-4, 1 and 2 threads and four instruction-set settings by
benchmarks/learning_spread.py (table: benchmarks/learning_spread.md). FDPERF_LEARNING_SEED=s
reruns this test on data and training seed s.
"""

import os

from learning import check_learning, run_learning


def test_tsa_learns_step_local_scores_and_beats_feature_regression(tmp_path, one_thread):
    m = run_learning(tmp_path, seed=int(os.environ.get("FDPERF_LEARNING_SEED", "0")))
    print(
        f"held-out rho: TSA {m['rho_tsa']:.3f}  F+R {m['rho_fr']:.3f}  "
        f"TSA-oracle {m['rho_oracle']:.3f}  (epoch 8: {m['evaluated'][0][1]:.3f})"
    )
    check_learning(m)
