"""The settings of failed sign-in throttling (``AINODE_SIGNIN_*``).

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), read and checked with every other setting at start-up.
``node.auth.throttle`` applies them to the local sign-in form.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SigninSettings(BaseModel):
    """How many failed local sign-ins a name or an address gets, and for how long."""

    signin_max_failures: int = Field(
        default=5,
        ge=1,
        description="failed local sign-ins for one name, or from one address, after which "
        "further tries are refused (429) until the window has passed",
    )
    signin_window_seconds: int = Field(
        default=900,
        ge=1,
        description="the window failed sign-ins are counted in, from the first of them",
    )
