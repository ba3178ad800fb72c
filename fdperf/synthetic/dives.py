"""The synthetic dives' catalogue (dive numbers, their steps and difficulty) and the judging rule.

Dive numbers follow the FINA code: group digit (1 forward, 2 back, 3 reverse, 4 inward, 5 twisting),
half-somersaults, then position (a straight, b pike, c tuck). Difficulties are close to the 3 m
springboard table; they only need a realistic spread. Sub-action type ids are those of FineDiving's
`Sub_action_Types_Table.pkl` (copied in SUB_ACTION_TYPES) so that the synthetic labels read like
the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# FineDiving's sub-action type table (type id -> name), as published with the dataset.
SUB_ACTION_TYPES = {
    1: "Forward",
    2: "Back",
    3: "Reverse",
    4: "Inward",
    5: "Arm.Forward",
    6: "Arm.Back",
    7: "Arm.Reverse",
    8: "1 Som.Straight",
    9: "1.5 Soms.Straight",
    10: "2 Soms.Straight",
    11: "2.5 Soms.Straight",
    12: "1 Som.Pike",
    13: "1.5 Soms.Pike",
    14: "2 Soms.Pike",
    15: "2.5 Soms.Pike",
    16: "3 Soms.Pike",
    17: "3.5 Soms.Pike",
    18: "4 Soms.Pike",
    19: "4.5 Soms.Pike",
    20: "1 Som.Tuck",
    21: "1.5 Soms.Tuck",
    22: "2 Soms.Tuck",
    23: "2.5 Soms.Tuck",
    24: "3 Soms.Tuck",
    25: "3.5 Soms.Tuck",
    26: "4 Soms.Tuck",
    27: "4.5 Soms.Tuck",
    28: "5.5 Soms.Tuck",
    29: "0.5 Twist",
    30: "1 Twist",
    31: "1.5 Twists",
    32: "2 Twists",
    33: "2.5 Twists",
    34: "3 Twists",
    35: "3.5 Twists",
    36: "Entry",
    37: "0.5 Som.Pike",
    38: "Background",
    39: "0.5 Som.Straight",
    40: "0.5 Som.Tuck",
    41: "4 Twists",
    42: "4.5 Twists",
}
ENTRY = 36

# Take-off group -> (sub-action id, facing (+1 water side, -1 board side), rotation sign).
GROUPS = {
    "forward": (1, +1, +1),
    "back": (2, -1, +1),
    "reverse": (3, +1, -1),
    "inward": (4, -1, -1),
}


@dataclass(frozen=True)
class DiveKind:
    dive_number: str
    group: str  # a key of GROUPS
    somersaults: float  # 1.5, 2.5, 3.5: an odd number of halves, so every entry is head first
    position: str  # "straight", "pike" or "tuck"
    twists: float  # 0 for non-twisting dives
    difficulty: float

    def step_types(self) -> list[int]:
        """Sub-action type ids of the dive's steps, in order (3 steps, 4 with a twist)."""
        pos = {"straight": "Straight", "pike": "Pike", "tuck": "Tuck"}[self.position]
        soms = f"{self.somersaults:g} Som{'s' if self.somersaults > 1 else ''}.{pos}"
        ids = [GROUPS[self.group][0], _type_id(soms)]
        if self.twists:
            ids.append(_type_id(f"{self.twists:g} Twist{'s' if self.twists > 1 else ''}"))
        return ids + [ENTRY]


def _type_id(name: str) -> int:
    for k, v in SUB_ACTION_TYPES.items():
        if v == name:
            return k
    raise KeyError(f"no FineDiving sub-action type named {name!r}")


# Ordered so that a small set (which uses the first few kinds) still mixes groups and positions.
CATALOGUE = (
    DiveKind("107c", "forward", 3.5, "tuck", 0, 3.0),
    DiveKind("205c", "back", 2.5, "tuck", 0, 2.8),
    DiveKind("405b", "inward", 2.5, "pike", 0, 3.0),
    DiveKind("5253b", "back", 2.5, "pike", 1.5, 3.2),
    DiveKind("105b", "forward", 2.5, "pike", 0, 2.4),
    DiveKind("305c", "reverse", 2.5, "tuck", 0, 2.9),
    DiveKind("103b", "forward", 1.5, "pike", 0, 1.6),
    DiveKind("5154b", "forward", 2.5, "pike", 2.0, 3.4),
)

# How much each step's execution counts in a judge's award (take-off, flight, entry).
STEP_WEIGHTS = (0.35, 0.3, 0.35)
NUM_JUDGES = 5
JUDGE_NOISE = 0.3  # standard deviation of one judge's opinion, in award points


def judge_awards(qualities, rng: np.random.Generator) -> list[float]:
    """Five judges' awards (0..10 in half points) for per-step qualities in [0, 1]."""
    execution = float(np.dot(STEP_WEIGHTS, qualities))
    raw = 2.5 + 7.0 * execution + rng.normal(0.0, JUDGE_NOISE, NUM_JUDGES)
    return [float(a) for a in np.clip(np.round(raw * 2.0) / 2.0, 0.0, 10.0)]


def dive_score(awards, difficulty: float) -> float:
    """Score = difficulty x sum of the middle three of five awards (highest and lowest dropped)."""
    if len(awards) != NUM_JUDGES:
        raise ValueError(f"expected {NUM_JUDGES} judges' awards, got {len(awards)}")
    middle = sorted(awards)[1:-1]
    return round(float(difficulty) * float(sum(middle)), 2)
