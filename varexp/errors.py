"""Errors that reach the user as one line and a non-zero exit, never as a traceback."""


class VarexpError(Exception):
    """A problem with the user's input: bad config value, missing or corrupt data, ..."""


class ConfigError(VarexpError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""


def bad_value(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed; {allowed}")
