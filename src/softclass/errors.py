"""The project's own exception types.

Errors raised on user input name the offending value, where it came from and what was expected.
Tensor-argument errors of ``softclass.functional`` reuse torch's exception types (ValueError,
RuntimeError, IndexError) so that code written against ``torch.nn.functional`` keeps working;
errors about files, tables and models derive from :class:`SoftclassError`.
"""


class SoftclassError(Exception):
    """Base class of every error softclass raises about files, tables, models and options."""


class DataError(SoftclassError, ValueError):
    """A table cannot be read or does not fit what was asked (column, value, class)."""


class ModelFileError(SoftclassError, ValueError):
    """A saved model or checkpoint is missing, incomplete, unsafe or of an incompatible version."""


class ConfigError(SoftclassError, ValueError):
    """An option value is outside what is allowed."""


class OutputError(SoftclassError):
    """An output file or directory cannot be written: full device, read-only, a file in the way.

    Attributes:
        errno: the operating system's error number when one caused it, else None.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class OutputBusyError(OutputError):
    """Another run is writing the same output directory (it holds the directory's lock)."""


class TrainingDiverged(SoftclassError):
    """The training loss or the weights became NaN or infinite; nothing was saved as a model."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised by the command line's signal handler so that every
    ``finally`` (temporary files, locks) runs before the process exits with 128 + the signal.

    Attributes:
        signal_number: the signal that arrived (2 for SIGINT, 15 for SIGTERM).
        kept: one line saying what the interrupted command left on disk, set by the command.
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.kept: str | None = None


class SoftclassWarning(UserWarning):
    """Base class of the warnings softclass gives about its own files (the CLI prints each as one
    ``warning:`` line)."""


class NativeCacheWarning(SoftclassWarning):
    """The compiled-code cache held something that was not loaded (and was rebuilt instead)."""
