"""Command-line options generated from a config section's fields: one `--field-name` per field, its type, choices,
default and help taken from the field itself, so a new setting reaches the command line without a second list."""

from __future__ import annotations

import argparse
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from lmtune.errors import LmtuneError


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar(annotation: Any) -> tuple[Any, list | None]:
    """(argparse type, choices) of a field's annotation; `X | None` reads as X (the option is then optional)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        choices = list(get_args(annotation))
        return type(choices[0]), choices
    if annotation in (int, float, str):
        return annotation, None
    raise TypeError(f"no command-line form for {annotation!r}")


def add_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, section: type[BaseModel],
                         skip: tuple[str, ...] = ()) -> None:
    """An option per field of `section` (bools as --name / --no-name), defaulting to the field's default."""
    for name, field in section.model_fields.items():
        if name in skip:
            continue
        help_text = (field.description or "").replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(option(name), dest=name, action=argparse.BooleanOptionalAction, default=field.default,
                                help=help_text)
            continue
        kind, choices = _scalar(field.annotation)
        shown = f" (default: {field.default})" if field.default is not None else ""
        parser.add_argument(option(name), dest=name, type=kind, choices=choices, default=field.default,
                            metavar=None if choices else name.upper(), help=help_text + shown)


def config_from_arguments(args: argparse.Namespace, section: type[BaseModel]) -> BaseModel:
    """`section` from the parsed options; a value the field refuses is an LmtuneError naming the option."""
    values = {name: getattr(args, name) for name in section.model_fields if hasattr(args, name)}
    try:
        return section.model_validate(values)
    except ValidationError as err:
        problems = [f"{option(str(e['loc'][0]))}: {e['msg']}" for e in err.errors()]
        raise LmtuneError("invalid option: " + "; ".join(problems)) from None
