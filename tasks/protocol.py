"""The wire format shared by HostFact and WeFact API v2: PHP-bracket form bodies and the JSON envelope.

The API client encodes with it and the simulator decodes with it, so both speak one dialect of the format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

Dialect = Literal["hostfact", "wefact"]

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def _scalar(value: Any) -> str:
    # PHP's http_build_query writes booleans as 1/0 and null as nothing; the API reads strings anyway.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def encode_form(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested dicts/lists into PHP bracket pairs: ``InvoiceLines[0][Description]=...``."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            pairs.append((prefix, _scalar(value)))

    for key, value in params.items():
        if isinstance(value, Mapping | list | tuple):
            walk(key, value)
        else:
            pairs.append((key, _scalar(value)))
    return pairs


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested params from bracket pairs the way PHP fills ``$_POST``.

    Mappings whose keys are all integers (``[0]``, ``[1]`` or ``[]``) become lists, in key order.
    """
    root: dict[str, Any] = {}
    for name, value in pairs:
        head, _, rest = name.partition("[")
        keys = [head] + (_BRACKETS.findall("[" + rest) if rest else [])
        node = root
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if key == "":
                key = str(len(node))
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return {key: _listify(value) for key, value in root.items()}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
