"""`TrainConfig`: every option of `fdperf.train.train`, checked in one place before any loading."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.exemplars import POLICIES, policy_from_flags
from ..options import ConfigError, finite, int_at_least, one_of
from ..tsa import LAYOUTS, METHODS
from ..tsa.decode import DECODERS

# Options that shape the optimisation: a resume that changes one of them needs
# allow_config_change (model-shaping ones, fix_size/step_num/layout/method, can never change).
RESUME_GUARDED = (
    "max_epoch",
    "bs_train",
    "base_lr",
    "seed",
    "prob_tas_threshold",
    "voter_number",
    "policy",
    "eval_every",
    "amp",
    "view",
)

MAX_LR = 1e30

__all__ = ["ConfigError", "RESUME_GUARDED", "TrainConfig"]


@dataclass
class TrainConfig:
    """The options of one training run (defaults: the reference's FineDiving_TSA.yaml).

    The first group are the reference configuration keys; `policy` (default: from
    `action_number_choosing`) chooses exemplars; the rest are fdperf's run options.
    """

    method: str = "TSA"
    max_epoch: int = 200
    bs_train: int = 8
    base_lr: float = 1e-3
    seed: int = 0
    prob_tas_threshold: float = 0.25
    fix_size: int = 5
    step_num: int = 3
    voter_number: int = 10
    action_number_choosing: bool = True
    random_choosing: bool = False
    policy: str | None = None
    layout: str = "reference"
    decode: str = "window"  # transition decoding: window (reference) or ordered
    eval_every: int = 1
    device: object = None  # cpu, cuda, cuda:N or a torch.device; None: auto
    amp: bool = False
    cuda_graph: bool = True
    resume: bool = False
    view: int | None = None
    eval_store: object = None  # feature store of the test transform (path)
    progress: bool = True
    allow_store_mismatch: bool = False  # resume/evaluate on a store of other identity
    allow_config_change: bool = False  # resume with other RESUME_GUARDED values

    @property
    def num_transitions(self) -> int:
        return self.step_num - 1

    @property
    def exemplar_policy(self) -> str:
        return self.policy or policy_from_flags(self.action_number_choosing, self.random_choosing)

    def settings(self) -> dict:
        """The options that shape a run, as train_summary.json and checkpoints record them."""
        return dict(
            method=self.method,
            max_epoch=self.max_epoch,
            bs_train=self.bs_train,
            base_lr=self.base_lr,
            seed=self.seed,
            prob_tas_threshold=self.prob_tas_threshold,
            fix_size=self.fix_size,
            step_num=self.step_num,
            voter_number=self.voter_number,
            policy=self.exemplar_policy,
            layout=self.layout,
            eval_every=self.eval_every,
        )

    def validate(self) -> TrainConfig:
        """Raises ConfigError naming the first bad option; returns self."""
        one_of("method", self.method, METHODS)
        for name in ("max_epoch", "bs_train", "fix_size", "voter_number", "eval_every"):
            int_at_least(name, getattr(self, name), 1)
        # steps = transitions + 1, and a procedure needs at least one transition
        int_at_least("step_num", self.step_num, 2)
        int_at_least("seed", self.seed, 0)
        lr = finite("base_lr", self.base_lr)
        # Adam's first step is base_lr / (1 - beta1): near 3e37 it overflows float32 inside torch
        if not 0 < lr <= MAX_LR:
            raise ConfigError(
                f"--base_lr {self.base_lr!r}: the learning rate must lie in "
                f"(0, {MAX_LR:g}] (the reference uses 0.001)"
            )
        if not 0 <= finite("prob_tas_threshold", self.prob_tas_threshold) <= 1:
            raise ConfigError(f"--prob_tas_threshold {self.prob_tas_threshold!r}: must lie in [0, 1]")
        if self.policy is not None:
            one_of("policy", self.policy, POLICIES)
        one_of("layout", self.layout, LAYOUTS)
        one_of("decode", self.decode, DECODERS)
        if self.view is not None:
            int_at_least("view", self.view, 0)
        return self
