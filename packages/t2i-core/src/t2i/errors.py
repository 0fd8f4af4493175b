"""Errors that mean "the user asked for something that cannot be done".

The CLI turns any :class:`UsageError` into one line on stderr and exit code 2; everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UsageError", "UnknownComponentError", "DuplicateComponentError", "ConfigError", "RegistrationError"]


class UsageError(Exception):
    """A user mistake: a bad name, value, path or combination. The message is one complete line."""


class ConfigError(UsageError):
    """A configuration key or value that is unknown, mistyped or out of range."""


class UnknownComponentError(UsageError, KeyError):
    """A component name that no installed plugin registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DuplicateComponentError(UsageError):
    """Two plugins registered the same name for the same kind of component."""


class RegistrationError(UsageError, ValueError):
    """A plugin registered something t2i cannot use: a bad name, a bad ``"module:Name"`` reference, an
    instance instead of a class or function, or a config dataclass whose defaults contradict their types.
    The message names the plugin, the component and, for a config, the field."""
