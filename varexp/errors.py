"""Errors that reach the user as one line and a non-zero exit, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
        return ConfigError(
            f"{self.key}={typed} is not allowed; {self.allowed}", self.key, self.allowed
        )


def bad_value(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed; {allowed}", key, allowed)


def did_you_mean(typed: object, choices: Iterable[object], shown: str = "{}") -> str:
    """The words "did you mean X? " naming the choice closest to a mistyped word (difflib's
    ratio, at least 0.6: `trian` finds train, `xyz` finds nothing), or "" where none is; choices
    equally close are all named (figure9: figure1, figure2 or figure3). `shown` spells a choice
    for the message (e.g. "arch.{}" for a key of arch)."""
    typed = str(typed)
    scores: dict[str, float] = {}
    for choice in map(str, choices):
        matcher = difflib.SequenceMatcher(None, typed, choice)
        if choice != typed and matcher.ratio() >= 0.6:
            scores[choice] = matcher.ratio()
    if not scores:
        return ""
    best = [shown.format(c) for c, score in scores.items() if score == max(scores.values())]
    named = best[0] if len(best) == 1 else ", ".join(best[:-1]) + " or " + best[-1]
    return f"did you mean {named}? "
