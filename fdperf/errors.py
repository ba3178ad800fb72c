"""The one base class of the errors a user can cause (bad file, key, option or value).

Every command turns a `UserError` into a one-line message and exit status 2 (`fdperf.cli.run`);
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An input, option or file that fdperf refuses; the message names it and the fix."""


def one_line(error: BaseException) -> str:
    """The message of `error` folded onto one line (KeyError's quotes removed)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split())
    return text or type(error).__name__
