"""Errors a user can cause. The CLI turns them into one line on stderr and exit status 2."""

from __future__ import annotations

__all__ = ["DatafreeError", "UserInputError", "NumericalError"]


class DatafreeError(Exception):
    """Base class for every error datafree raises on purpose.

    ``exit_code`` is the CLI's exit status for it (see docs/failures.md).
    """

    exit_code = 2


class UserInputError(DatafreeError, ValueError):
    """Bad input from the user: a missing file, a malformed card, a wrong argument.

    The message names the bad value and, where one exists, the way out.
    """


class NumericalError(DatafreeError):
    """A run diverged (NaN or inf loss); the last good checkpoint is left as it was."""

    exit_code = 3
