"""Errors a user can cause. The CLI turns them into one line on stderr and exit status 2."""

from __future__ import annotations

__all__ = ["DatafreeError", "UserInputError"]


class DatafreeError(Exception):
    """Base class for every error datafree raises on purpose."""


class UserInputError(DatafreeError, ValueError):
    """Bad input from the user: a missing file, a malformed card, a wrong argument.

    The message names the bad value and, where one exists, the way out.
    """
