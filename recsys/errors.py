"""The exceptions of the engine. The CLI maps each to a message and an exit code."""

from __future__ import annotations


class RecsysError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 1


class UsageError(RecsysError):
    """Options or arguments that do not fit together, or a missing file or run."""

    exit_code = 2


class DataError(RecsysError):
    """Input data that breaks a rule of the input format."""

    exit_code = 3


class ConfigError(UsageError):
    """A config file that cannot be read or holds an unknown or invalid setting."""


class RunError(RecsysError):
    """A stage failed for a reason other than the input (for example, too little data)."""

    exit_code = 4


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). Like KeyboardInterrupt it is no Exception, so
    that the work under way unwinds through its cleanup without being reported as a failure."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended
