"""How a list setting is written in the environment: a JSON list, or comma-separated.

Shared by ``node.settings`` and the settings mixins (which ``node.settings`` imports, so
they cannot import it back).
"""

from __future__ import annotations

import json
from typing import Any


def listed(value: Any) -> Any:
    """``value`` as a list when it is text (``[...]`` JSON, else comma-separated items,
    blanks dropped); anything else as it is, for the field's own validation."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value
