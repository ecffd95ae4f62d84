"""One error type for everything a user can fix: bad input, bad options, impossible budgets.

Messages follow one template: what is wrong, where (file, column, row or option), and what to do.
The CLI prints them as a single line; anything else is a bug and keeps its traceback.
"""


class SelectflowError(ValueError):
    """An error caused by the user's input or configuration, with a message that says how to fix it."""


class InputError(SelectflowError):
    """The corpus (file, column, row) cannot be used as given."""


class ConfigError(SelectflowError):
    """An option or combination of options is invalid."""


class ResourceError(SelectflowError):
    """The requested work would not fit in this machine's memory; the message names the option that fits."""
