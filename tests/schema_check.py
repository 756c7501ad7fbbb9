"""A small JSON Schema (draft 2020-12) checker for the keywords netc's schemas use.

`jsonschema` is not a dependency of netc; when it is installed, `validate` uses it as well, and
both must agree. Supported here: type, properties, required, additionalProperties,
propertyNames, items, uniqueItems, minLength, maxLength, minimum, pattern, anyOf, format
(ipv4, ipv6) and local `$ref` (`#/$defs/...`). An unknown keyword is an error, so the schema
cannot silently outgrow the checker.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

_KNOWN = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties", "required",
          "additionalProperties", "propertyNames", "items", "uniqueItems", "minLength", "maxLength",
          "minimum", "pattern", "anyOf", "format"}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _format_ok(fmt: str, v: Any) -> bool:
    if not isinstance(v, str):
        return True
    if fmt == "ipv4":
        try:
            ipaddress.IPv4Address(v)
            return True
        except ValueError:
            return False
    if fmt == "ipv6":
        try:
            ipaddress.IPv6Address(v)
            return True
        except ValueError:
            return False
    raise ValueError(f"format {fmt} is not supported by this checker")


def errors(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None, at: str = "$") -> list[str]:
    """Every violation of `schema` by `value`, as `path: message`."""
    root = root or schema
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} at {at} are not supported by this checker")
    out: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        out += errors(target, value, root, at)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return out + [f"{at}: {value!r} is not of type {'/'.join(types)}"]
    if "anyOf" in schema and not any(not errors(s, value, root, at) for s in schema["anyOf"]):
        out.append(f"{at}: {value!r} matches none of anyOf")
    if "format" in schema and not _format_ok(schema["format"], value):
        out.append(f"{at}: {value!r} is not a valid {schema['format']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: {value!r} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{at}: {value!r} is longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool) and "minimum" in schema:
        if value < schema["minimum"]:
            out.append(f"{at}: {value} is less than {schema['minimum']}")
    if isinstance(value, list):
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(schema["items"], item, root, f"{at}[{i}]")
        if schema.get("uniqueItems"):
            seen = [json.dumps(x, sort_keys=True) for x in value]
            if len(seen) != len(set(seen)):
                out.append(f"{at}: items are not unique")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{at}: `{key}` is required")
        for key, v in value.items():
            if "propertyNames" in schema:
                out += errors(schema["propertyNames"], key, root, f"{at}.{key}(name)")
            if key in props:
                out += errors(props[key], v, root, f"{at}.{key}")
            else:
                extra = schema.get("additionalProperties", True)
                if extra is False:
                    out.append(f"{at}: unexpected key `{key}`")
                elif isinstance(extra, dict):
                    out += errors(extra, v, root, f"{at}.{key}")
    return out


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def validate(schema: dict[str, Any], value: Any) -> list[str]:
    """Violations found by this checker; when jsonschema is installed it must agree."""
    found = errors(schema, value)
    try:
        import jsonschema
    except ImportError:
        return found
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    theirs = [e.message for e in validator.iter_errors(value)]
    assert bool(theirs) == bool(found), f"checker disagrees with jsonschema: {found} vs {theirs}"
    return found
