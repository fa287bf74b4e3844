"""Errors that the CLI reports as one clear line instead of a traceback."""


class TextonlyError(Exception):
    """Base class: an error whose message is meant for the user as it is."""


class DatasetError(TextonlyError):
    """A dataset on disk is malformed (the message names the file and, where known, the line)."""


class HubUnreachableError(TextonlyError):
    """A model or dataset hub could not be reached."""
