"""What a JSON request body may hold, checked once it is parsed and before any model sees it.

Validation and storage trust these bounds: a body that passes can be stored, read back, listed,
serialised and sent upstream on every engine and database.

- Nesting: at most MAX_JSON_DEPTH levels of objects and arrays, the body itself being the first.
  Deeper documents exhaust recursion in the parser, in validation and in serialisation, and
  free-form fields (function parameters, JSON schemas) would carry them into the registry.
- Numbers: finite only. `1e400` parses as infinity, which JSON cannot carry back out.
- Strings (keys included): no U+0000, which PostgreSQL text cannot hold, and no lone surrogate
  (`"\\ud800"`), which is not Unicode and cannot be encoded to UTF-8 for storage.

Each refusal is a 400 whose `param` is the path of the offending value.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import InvalidRequest

MAX_JSON_DEPTH = 32

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_PATH_LIMIT = 200  # characters of `param`; a longer path is named by its first field


def _param(path: tuple[str | int, ...]) -> str | None:
    dotted = ".".join(str(part) for part in path)
    if len(dotted) > _PATH_LIMIT:
        return str(path[0])[:_PATH_LIMIT]
    return dotted or None


def _unstorable(text: str, param: str | None, what: str) -> InvalidRequest:
    char = _UNSTORABLE.search(text).group()
    reason = ("the NUL character (U+0000)" if char == "\x00"
              else f"a lone surrogate (U+{ord(char):04X}), which is not valid Unicode")
    where = f"'{param}'" if param else "the request body"
    return InvalidRequest(f"Invalid {what} in {where}: strings must not contain {reason}.",
                          param=param, code="invalid_string")


def check_body_bounds(body: Any) -> None:
    """Refuse a parsed body that breaks one of the bounds above; walks it without recursion."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(body, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(path)
            for key, item in value.items():
                if _UNSTORABLE.search(key):
                    raise _unstorable(key, _param(path), "key")
                stack.append((item, depth + 1, (*path, key)))
        elif isinstance(value, list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(path)
            stack.extend((item, depth + 1, (*path, index)) for index, item in enumerate(value))
        elif isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise _unstorable(value, _param(path), "value")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(
                f"Invalid value for '{_param(path)}': numbers must be finite; this one is too "
                "large to represent.", param=_param(path), code="invalid_number")


def _too_deep(path: tuple[str | int, ...]) -> InvalidRequest:
    return InvalidRequest(
        f"The request body is nested too deeply at '{_param(path)}': at most {MAX_JSON_DEPTH} "
        "levels of objects and arrays are allowed.", param=_param(path), code="nested_too_deeply")


def too_deep_to_parse() -> InvalidRequest:
    """The answer for a body so deeply nested that the JSON parser gave up."""
    return InvalidRequest(
        f"The request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of objects and "
        "arrays are allowed.", code="nested_too_deeply")
