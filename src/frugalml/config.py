"""Base class for every typed config: strict (unknown keys are errors), JSON-serializable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")
