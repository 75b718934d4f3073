"""Base class for every typed config: strict (unknown keys are errors), JSON-serializable."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

# Recipe and stage names become folder names: letters, digits, '.', '_' and '-', starting with a
# letter or digit (so never '..', never a path, never hidden), at most 64 characters.
NAME_CHARS = "letters, digits, '.', '_' and '-' (starting with a letter or digit, at most 64)"


def _safe_name(v: str) -> str:
    ok = 0 < len(v) <= 64 and v[0].isascii() and v[0].isalnum()
    if not ok or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in v):
        raise ValueError(f"{v!r} is not a valid name: use {NAME_CHARS}")
    return v


SafeName = Annotated[str, AfterValidator(_safe_name)]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def checked(cls, where: str, value: Any = None, **fields: Any) -> Any:
        """Validate user input (a mapping/short form, or keyword fields): a ValidationError becomes one
        ConfigError line naming `where` and the key, as recipe errors do."""
        from frugalml.errors import ConfigError

        try:
            return cls.model_validate(value if value is not None else fields)
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{where}{'.' + key if key else ''}: {msg}") from None


class NamedConfig(Config):
    """A config whose only required key is `name`, so YAML may say `data: digits` for `{name: digits}`."""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value
