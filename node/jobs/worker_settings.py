"""The settings of the node's workers (``AINODE_DECODE_CACHE_BYTES``,
``AINODE_DELIVERY_CONCURRENCY``).

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), read, merged and checked with every other setting at start-up.
The analysis worker keeps decoded series for the jobs of other models on the same
series (``workers.load.cache``); the delivery worker runs several delivery passes at
once, so one archive that does not answer holds up only its own deliveries.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    """How much an analysis worker keeps decoded, how many deliveries run at once."""

    decode_cache_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="decoded series an analysis worker keeps for the next job on the same "
        "series (float32 voxels); 0: none kept",
    )
    delivery_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="delivery passes the delivery worker runs at once (threads)",
    )
