"""Request validation, held to the service model botocore ships for `redshift-data`.

Types, required members, lengths, ranges, enums and patterns come from the model,
so the emulator rejects what the service would even when a client skips
botocore's own (partial, client-side) validation. Unknown members are rejected
too: stricter than the service, to catch misspelt fields.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ListShape, ServiceModel, Shape, StructureShape

from tests.emulators.redshift.errors import ApiError, validation_error


@cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("redshift-data")


def validate_input(operation: str, params: dict[str, Any]) -> None:
    shape = service_model().operation_model(operation).input_shape
    errors: list[str] = []
    if shape is not None:
        _check(shape, params, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise validation_error(f"{count} validation {noun} detected: " + "; ".join(errors))


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        _check_structure(shape, value, path, errors)
    elif isinstance(shape, ListShape):
        _check_list(shape, value, path, errors)
    elif kind == "string":
        _check_string(shape, value, path, errors)
    elif kind in ("integer", "long"):
        _check_number(shape, value, path, errors)
    elif kind == "boolean" and not isinstance(value, bool):
        raise _serialization(path, "boolean")


def _check_structure(shape: StructureShape, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(value, dict):
        raise _serialization(path, "structure")
    for name in value:
        if name not in shape.members:
            errors.append(f"Unknown member '{_join(path, name)}' (emulator: rejected)")
    for name, member in shape.members.items():
        member_path = _join(path, name)
        if value.get(name) is None:
            if name in shape.required_members:
                errors.append(f"Value null at '{member_path}' failed to satisfy constraint: {_NN}")
            continue
        _check(member, value[name], member_path, errors)


def _check_list(shape: ListShape, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(value, list):
        raise _serialization(path, "list")
    _check_length(shape, value, len(value), path, errors)
    for index, item in enumerate(value, start=1):
        item_path = f"{path}.{index}.member"
        if item is None:
            errors.append(f"Value null at '{item_path}' failed to satisfy constraint: {_NN}")
        else:
            _check(shape.member, item, item_path, errors)


def _check_string(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(value, str):
        raise _serialization(path, "string")
    _check_length(shape, value, len(value), path, errors)
    meta = shape.metadata
    if "enum" in meta and value not in meta["enum"]:
        allowed = ", ".join(meta["enum"])
        errors.append(_failed(value, path, f"Member must satisfy enum value set: [{allowed}]"))
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        pattern = meta["pattern"]
        errors.append(
            _failed(value, path, f"Member must satisfy regular expression pattern: {pattern}")
        )


def _check_number(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _serialization(path, "integer")
    meta = shape.metadata
    if "min" in meta and value < meta["min"]:
        errors.append(
            _failed(value, path, f"Member must have value greater than or equal to {meta['min']}")
        )
    if "max" in meta and value > meta["max"]:
        errors.append(
            _failed(value, path, f"Member must have value less than or equal to {meta['max']}")
        )


def _check_length(shape: Shape, value: Any, length: int, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    if "min" in meta and length < meta["min"]:
        errors.append(
            _failed(value, path, f"Member must have length greater than or equal to {meta['min']}")
        )
    if "max" in meta and length > meta["max"]:
        errors.append(
            _failed(value, path, f"Member must have length less than or equal to {meta['max']}")
        )


_NN = "Member must not be null"


def _failed(value: Any, path: str, constraint: str) -> str:
    shown = value if isinstance(value, int | str) else "[...]"
    if isinstance(shown, str) and len(shown) > 100:
        shown = shown[:100] + "..."
    return f"Value '{shown}' at '{path}' failed to satisfy constraint: {constraint}"


def _join(path: str, name: str) -> str:
    member = name[:1].lower() + name[1:]  # the service reports camelCase paths
    return f"{path}.{member}" if path else member


def _serialization(path: str, expected: str) -> ApiError:
    return ApiError("SerializationException", f"Expected {expected} at '{path or 'body'}'")
