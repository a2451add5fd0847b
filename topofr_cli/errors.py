"""Exceptions that the CLI turns into a one-line message and a non-zero exit code."""


class TopofrError(Exception):
    """A problem with the user's input (file, option, recipe) that the user can fix.

    The message must be one line and name the file (and record/line/key) that is wrong.
    """
