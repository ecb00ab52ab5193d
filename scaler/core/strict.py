"""The base of every policy section (and every serverless target): strict, closed and frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, values are never coerced across types, and a parsed section is frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
