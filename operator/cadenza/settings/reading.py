"""How one ``CADENZA_*`` variable becomes a value, shared by every section of the settings: an
unset or blank variable takes its default, anything else is converted and bounded or refused with
a :class:`SettingsError` naming the variable, so a bad value stops the start, never a later call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A ``CADENZA_*`` variable holds a value the operator cannot use."""


def boolean(raw: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case)."""
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


class Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            raise SettingsError(
                f"{name}={raw!r} is not a valid {getattr(kind, '__name__', 'value')}"
            ) from None
        if isinstance(value, int | float):
            if value != value or value in (float("inf"), float("-inf")):
                raise SettingsError(f"{name}={raw!r} is not a finite number")
            if minimum is not None and value < minimum:
                raise SettingsError(f"{name}={raw!r} is below the minimum {minimum}")
            if maximum is not None and value > maximum:
                raise SettingsError(f"{name}={raw!r} is above the maximum {maximum}")
        return value
