"""Guards around every endpoint, after authentication and before the body is read.

A guard is `guard(operation, proceed) -> Response`: it may answer by itself (a rate limit, a
replayed response) or call `proceed()` and look at what came back. Modules add theirs with
`add_guard` when the app is built; the first added is the outermost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from flask import Response, current_app

if TYPE_CHECKING:
    from . import Operation

Guard = Callable[["Operation", Callable[[], Response]], Response]
_EXTENSION_KEY = "bridge.guards"


def add_guard(app, guard: Guard) -> None:
    """Wrap every endpoint of `app` in `guard`, inside the guards added before it."""
    app.extensions.setdefault(_EXTENSION_KEY, []).append(guard)


def guarded(operation: "Operation", proceed: Callable[[], Response]) -> Response:
    """Run `proceed` through the app's guards, outermost first."""
    call = proceed
    for guard in reversed(current_app.extensions.get(_EXTENSION_KEY, [])):
        call = (lambda guard, inner: lambda: guard(operation, inner))(guard, call)
    return call()
