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


class SoftclassWarning(UserWarning):
    """Base class of the warnings softclass gives about its own files (the CLI prints each as one
    ``warning:`` line)."""


class NativeCacheWarning(SoftclassWarning):
    """The compiled-code cache held something that was not loaded (and was rebuilt instead)."""
