"""The one exception type for errors a user can cause (bad config, bad data, bad paths)."""


class UserError(Exception):
    """A problem the user can fix. The message names the problem and the fix, on one line.

    The CLI prints it as ``error: <message>`` and exits with code 2; anything else is a bug and keeps its traceback.
    """
