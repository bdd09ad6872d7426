"""Errors that reach the user as one line and a non-zero exit, never as a traceback."""

from __future__ import annotations


class VarexpError(Exception):
    """A problem with the user's input: bad config value, missing or corrupt data, ..."""


class ConfigError(VarexpError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""

    def __init__(self, message: str, key: str | None = None, allowed: str | None = None) -> None:
        super().__init__(message)
        self.key, self.allowed = key, allowed

    def as_typed(self, typed: str) -> ConfigError:
        """The same error showing the value as the user typed it (a float key reads `lr=0`
        as 0.0)."""
        return ConfigError(f"{self.key}={typed} is not allowed; {self.allowed}", self.key,
                           self.allowed)


def bad_value(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed; {allowed}", key, allowed)
