"""Range checks of option values, shared by `train` and `evaluate`: run before anything loads,
they raise `ConfigError` naming the option as the command line spells it."""

from __future__ import annotations

import math
import numbers

from .errors import UserError


class ConfigError(UserError, ValueError):
    """An option value that training or evaluation refuses; the message names the option."""


def int_at_least(name: str, value, low: int) -> None:
    """`--name` must be an integer >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"--{name} {value!r}: must be an integer >= {low}")


def finite(name: str, value) -> float:
    """`--name` as a finite float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} {value!r}: must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"--{name} {value!r}: must be a finite number")
    return number


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"--{name} {value!r}: choose one of {', '.join(map(str, choices))}")
