"""Query arguments, declared once: how each is read and checked, and how the API describes it.

A route declares its arguments (`LIMIT = Integer("limit", 1, 1000, default=100)`), reads them
with `.read()` (a bad value is a 400 naming the argument) and lists them in its `@operation`,
which puts each one's `.parameter()` into /openapi.json: what is described is what is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import request

from web.base import DIGITS, bad_request, duration, flag, instant


@dataclass(frozen=True)
class Argument:
    """A query argument: its name, what it means, and its value when absent."""

    name: str
    description: str = ""
    default: Any = None
    required: bool = False

    def read(self) -> Any:
        """The argument's value in the current request (its default when absent)."""
        raw = request.args.get(self.name)
        if raw is None:
            if self.required:
                raise bad_request(f"{self.name} is required")
            return self.default
        return self.convert(raw)

    def convert(self, text: str) -> Any:
        return text

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def parameter(self) -> dict[str, Any]:
        schema = self.schema()
        if self.default is not None:
            schema = {**schema, "default": self.default}
        described = {"name": self.name, "in": "query", "required": self.required}
        if self.description:
            described["description"] = self.description
        return {**described, "schema": schema}


@dataclass(frozen=True)
class Text(Argument):
    """Any text of at most `max_length` characters (surrounding spaces kept)."""

    max_length: int | None = None
    min_length: int = 0

    def convert(self, text: str) -> str:
        if self.max_length is not None and len(text) > self.max_length:
            raise bad_request(f"{self.name} is at most {self.max_length} characters")
        if len(text) < self.min_length:
            raise bad_request(f"{self.name} is required")
        return text

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


@dataclass(frozen=True)
class Matching(Text):
    """Text matching a regular expression (`what` says in words what it must be)."""

    pattern: str = ""
    what: str = ""

    def convert(self, text: str) -> str:
        text = super().convert(text)
        if not re.fullmatch(self.pattern, text):
            raise bad_request(f"{self.name} must be {self.what}")
        return text

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "pattern": self.pattern}


@dataclass(frozen=True)
class Integer(Argument):
    """Decimal digits for an integer from `minimum` to `maximum`."""

    minimum: int = 0
    maximum: int = 10**9 - 1

    def convert(self, text: str) -> int:
        if not DIGITS.fullmatch(text) or not self.minimum <= int(text) <= self.maximum:
            raise bad_request(
                f"{self.name} must be an integer from {self.minimum} to {self.maximum}"
            )
        return int(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class Choice(Argument):
    """One of a few words."""

    choices: tuple[str, ...] = field(default_factory=tuple)

    def convert(self, text: str) -> str:
        if text not in self.choices:
            raise bad_request(f"{self.name} must be {self.alternatives()}")
        return text

    def alternatives(self) -> str:
        if len(self.choices) == 2:
            return " or ".join(self.choices)
        return f"one of: {', '.join(self.choices)}"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices)}


@dataclass(frozen=True)
class Flag(Argument):
    """Yes or no: true, false, 1 or 0, in any letter case (absent: false)."""

    default: Any = False

    def convert(self, text: str) -> bool:
        return flag(self.name, text)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Duration(Argument):
    """A positive duration: 90s, 30m, 2h, 1d or ISO-8601 (PT2H)."""

    pattern: str = ""

    def convert(self, text: str) -> int:
        return duration(self.name, text)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", **({"pattern": self.pattern} if self.pattern else {})}


@dataclass(frozen=True)
class Instant(Argument):
    """An ISO-8601 instant (no offset: UTC), as epoch microseconds."""

    pattern: str = ""

    def convert(self, text: str) -> int:
        return instant(self.name, text)

    def schema(self) -> dict[str, Any]:
        schema = {"type": "string", "format": "date-time"}
        return {**schema, **({"pattern": self.pattern} if self.pattern else {})}
