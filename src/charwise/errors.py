"""The two things charwise raises for a user to read (a leaf: imports nothing)."""


class CharwiseError(Exception):
    """A problem the user can fix (bad input, missing file...). The CLI prints it on one line."""


class CharwiseWarning(UserWarning):
    """Something the user may want to fix that does not stop the command (a font to install).
    The CLI prints it on one line: charwise: warning: ..."""
