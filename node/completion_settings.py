"""The settings of series completion (``AINODE_COMPLETION_*``): the grace after a series'
last instance before evidence counts, and the rules per sender.

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), so they are read, merged and checked with every other setting
at start-up; a malformed rule stops the node there. ``node.completion`` applies them.

A rule names what a sender's associations say about completeness:

- ``release``: the sender sends only whole series (a PACS that forwards stable
  studies): a series it sent is complete once it releases the association, whatever
  the numbering;
- ``expected:N``: its series are complete once N instances are held;
- ``quiet``: its data are no evidence: its series wait for the quiet period.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from node.delivery.destinations import AE_TITLE

ANY_SENDER = "*"  # the rule for every calling AE title without one of its own


class CompletionRule(BaseModel):
    """What one sender's associations say about completeness (module docstring)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["release", "expected", "quiet"]
    count: int | None = Field(default=None, ge=1)  # instances, for ``expected``

    @model_validator(mode="after")
    def _count_with_expected(self) -> CompletionRule:
        if (self.kind == "expected") != (self.count is not None):
            raise ValueError("a count goes with 'expected' only: expected:N")
        return self

    @classmethod
    def parse(cls, text: str) -> CompletionRule:
        """``release``, ``quiet`` or ``expected:N``."""
        kind, colon, count = text.strip().partition(":")
        if kind == "expected":
            if not colon or not count.strip().isdigit():
                raise ValueError(f"completion rule {text!r}: expected:N, N a whole number")
            return cls(kind="expected", count=int(count))
        if colon or kind not in ("release", "quiet"):
            raise ValueError(f"completion rule {text!r} is not release, quiet or expected:N")
        return cls(kind=kind)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"expected:{self.count}" if self.kind == "expected" else self.kind


def _rule(value: Any) -> Any:
    return CompletionRule.parse(value) if isinstance(value, str) else value


def parse_completion_rules(text: str) -> dict[str, Any]:
    """``"ORTHANC=release,CT1=expected:300"`` -> calling AE title to rule; a JSON object
    (``{"ORTHANC": "release"}``) for AE titles with commas or equals signs."""
    if text.strip().startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("completion_rules must be a JSON object of AE title to rule")
        return {str(aet): _rule(rule) for aet, rule in loaded.items()}
    rules: dict[str, Any] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        aet, equals, rule = entry.partition("=")
        if not equals:
            raise ValueError(f"completion_rules entry {entry!r} is not AET=RULE")
        rules[aet.strip()] = _rule(rule)
    return rules


class CompletionSettings(BaseModel):
    """How soon evidence may complete a series, and what each sender's data are worth."""

    completion_grace_seconds: float = Field(
        default=2.0,
        ge=0,
        description="a series' data count as evidence of completeness only this long after "
        "its last instance",
    )
    completion_rules: Annotated[dict[str, CompletionRule], NoDecode] = Field(
        default_factory=dict,
        description="calling AE title = release, quiet or expected:N, comma-separated (or a "
        "JSON object); * for every other sender",
    )

    @field_validator("completion_rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_completion_rules(value)
        if isinstance(value, dict):  # from a config file, or as_config
            return {str(aet): _rule(rule) for aet, rule in value.items()}
        return value

    @field_validator("completion_rules")
    @classmethod
    def _check_senders(cls, value: dict[str, CompletionRule]) -> dict[str, CompletionRule]:
        for aet in value:
            if aet != ANY_SENDER and (not AE_TITLE.match(aet) or aet.strip() != aet):
                raise ValueError(f"completion_rules: {aet!r} is not an AE title (or *)")
        return value
