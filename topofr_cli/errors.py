"""Exceptions that the CLI turns into a one-line message and a non-zero exit code."""


class TopofrError(Exception):
    """A problem with the user's input (file, option, recipe) that the user can fix.

    The message must be one line and name the file (and record/line/key) that is wrong.
    """


class PreflightError(TopofrError):
    """A user error found before a run starts, alike in every process of a distributed run:
    the CLI prints it from rank 0 only, so torchrun workers report it once, not once each."""
