"""The project's own exception types.

Errors raised on user input name the offending value, where it came from and what was expected.
Tensor-argument errors of ``softclass.functional`` reuse torch's exception types (ValueError,
RuntimeError, IndexError) so that code written against ``torch.nn.functional`` keeps working;
errors about files, tables and models derive from :class:`SoftclassError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class SoftclassError(Exception):
    """Base class of every error softclass raises about files, tables, models and options."""


class DataError(SoftclassError, ValueError):
    """A table cannot be read or does not fit what was asked (column, value, class)."""


class ModelFileError(SoftclassError, ValueError):
    """A saved model or checkpoint is missing, incomplete, unsafe or of an incompatible version."""


class ConfigError(SoftclassError, ValueError):
    """An option value is outside what is allowed."""


# A named option in an OptionError template: {name} its name, {name=} its name and value,
# {name:text} its name with the value ``text`` (a value the rule asks for).
_PLACEHOLDER = re.compile(r"\{(\w+)(=|:[^{}]*)?\}")


class OptionError(ConfigError):
    """A :class:`ConfigError` about named options, which each front door spells its own way.

    The message is a template naming options in braces, with the offending values apart:
    ``OptionError("{learning_rate=} must be > 0", learning_rate=0.0)``. ``str(error)`` spells
    them as the Python parameters ("learning_rate=0.0 must be > 0"); the command line calls
    :meth:`spelled` with its flag table ("--lr 0 must be > 0").

    Attributes:
        template: the message; ``{name}`` is an option's name, ``{name=}`` its name and value,
            ``{name:text}`` its name with the value ``text`` (e.g. ``{optimizer:sgd}``).
        values: the value of each option the template names with ``=``.
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template = template
        self.values = values
        super().__init__(self.spelled(python_spelling))

    def spelled(self, spell: Callable[[str, tuple[object, ...]], str]) -> str:
        """The message with each option spelled by ``spell(name, value)``: ``value`` is ``()``
        for the name alone, else a one-element tuple holding the value."""

        def one(match: re.Match[str]) -> str:
            name, form = match[1], match[2]
            if not form:
                return spell(name, ())
            if form == "=":
                return spell(name, (self.values[name],))
            return spell(name, (form[1:],))

        return _PLACEHOLDER.sub(one, self.template)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_option_error, (type(self), self.template, self.values))


def python_spelling(name: str, value: tuple[object, ...]) -> str:
    """``learning_rate`` or ``learning_rate=0.0``: an option as a Python keyword argument."""
    return f"{name}={value[0]!r}" if value else name


def _rebuild_option_error(
    cls: type[OptionError], template: str, values: dict[str, object]
) -> OptionError:
    return cls(template, **values)


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


# The signals that asked the command line to stop, in order (its handler appends; it clears the
# list when the command ends). The handler's Interrupted can be lost: a signal handled while a
# finalizer runs (``__del__``, a weakref callback) has its exception printed and dropped. So a
# step that must not follow a stop request, a run's directory swapped into place, checks here too.
STOP_REQUESTS: list[int] = []


class SoftclassWarning(UserWarning):
    """Base class of the warnings softclass gives about its own files (the CLI prints each as one
    ``warning:`` line)."""


class NativeUnavailableWarning(SoftclassWarning):
    """softclass's compiled C code (built at install) is missing or unusable: the same math runs
    on torch ops, more slowly."""
