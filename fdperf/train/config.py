"""`TrainConfig`: every option of `fdperf.train.train`, checked in one place before any loading."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..data.exemplars import POLICIES, policy_from_flags
from ..errors import UserError
from ..tsa import LAYOUTS, METHODS

# Options that shape the optimisation: a resume that changes one of them needs
# allow_config_change (model-shaping ones, fix_size/step_num/layout/method, can never change).
RESUME_GUARDED = ("max_epoch", "bs_train", "base_lr", "seed", "prob_tas_threshold",
                  "voter_number", "policy", "eval_every", "amp", "view")


class ConfigError(UserError, ValueError):
    """An option value that training or evaluation refuses; the message names the option."""


def _int_at_least(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"--{name} {value!r}: must be an integer >= {low}")


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} {value!r}: must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"--{name} {value!r}: must be a finite number")
    return value


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
    eval_every: int = 1
    device: object = None                  # cpu, cuda, cuda:N or a torch.device; None: auto
    amp: bool = False
    cuda_graph: bool = True
    resume: bool = False
    view: int | None = None
    eval_store: object = None              # feature store of the test transform (path)
    progress: bool = True
    allow_store_mismatch: bool = False     # resume/evaluate on a store of other identity
    allow_config_change: bool = False      # resume with other RESUME_GUARDED values

    @property
    def num_transitions(self) -> int:
        return self.step_num - 1

    @property
    def exemplar_policy(self) -> str:
        return self.policy or policy_from_flags(self.action_number_choosing, self.random_choosing)

    def validate(self) -> "TrainConfig":
        """Raises ConfigError naming the first bad option; returns self."""
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: unknown; choose one of {', '.join(METHODS)}")
        for name in ("max_epoch", "bs_train", "fix_size", "voter_number", "eval_every"):
            _int_at_least(name, getattr(self, name), 1)
        # steps = transitions + 1, and a procedure needs at least one transition
        _int_at_least("step_num", self.step_num, 2)
        _int_at_least("seed", self.seed, 0)
        lr = _finite("base_lr", self.base_lr)
        if lr <= 0:
            raise ConfigError(f"--base_lr {self.base_lr!r}: the learning rate must be > 0")
        p = _finite("prob_tas_threshold", self.prob_tas_threshold)
        if not 0 <= p <= 1:
            raise ConfigError(f"--prob_tas_threshold {self.prob_tas_threshold!r}: must lie in [0, 1]")
        if self.policy is not None and self.policy not in POLICIES:
            raise ConfigError(f"--policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"--layout {self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if self.view is not None:
            _int_at_least("view", self.view, 0)
        return self
