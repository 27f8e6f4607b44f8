"""Reading a catalogue file: YAML into a pydantic model, or a `CatalogueError` naming
the file, the field path and the reason, so whoever edits prices can fix the line.

YAML floats become `Decimal` straight from their text (2.50 stays 2.50, never a
binary float) and YAML timestamps stay text for pydantic to parse with their offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)
Rate = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""A non-negative exact amount or rate as a catalogue states it."""


class CatalogueError(ValueError):
    """A price book, contract or cost file that cannot be used, and exactly why."""

    def __init__(self, path: Path | str, field: str, reason: str):
        self.path, self.field, self.reason = str(path), field, reason
        super().__init__(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")


class Spec(BaseModel):
    """Base of every catalogue model: unknown keys are typos, and typos are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Loader(yaml.SafeLoader):
    pass


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node))
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a number", node.start_mark
        ) from exc


def _text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _text)


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic location as a path a person can find: `versions[0].prices[2].rates`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def load_model(path: Path | str, model: type[M]) -> M:
    """Parse and validate one catalogue file, or raise `CatalogueError`."""
    return validate_model(path, read_yaml(path), model)


def read_yaml(path: Path | str) -> Any:
    """A catalogue file's YAML, numbers as decimals, or `CatalogueError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(path, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CatalogueError(path, "", f"not valid YAML: {exc}") from exc


def validate_model(
    path: Path | str, data: Any, model: type[M], context: dict[str, Any] | None = None
) -> M:
    try:
        return model.model_validate(data if data is not None else {}, context=context)
    except ValidationError as exc:
        raise CatalogueError(path, *_describe(exc)) from exc


def _describe(exc: ValidationError) -> tuple[str, str]:
    """The first problem's field and reason, then any further problems with their fields."""
    errors = exc.errors(include_url=False)
    fields = [field_path(error["loc"]) or "(top level)" for error in errors]
    reasons = [error["msg"].removeprefix("Value error, ") for error in errors]
    more = "".join(f"; also {f}: {r}" for f, r in zip(fields[1:], reasons[1:], strict=True))
    return fields[0], reasons[0] + more
