"""The list envelope shared by every list route."""

from typing import Any, Callable

from ..registry import Page
from ..schemas import ListObject


def list_object(page: Page, serialize: Callable[[Any], Any]) -> ListObject:
    """`{"object": "list", "data", "first_id", "last_id", "has_more"}` for one page."""
    data = [serialize(item) for item in page.items]
    return ListObject(data=data, first_id=data[0].id if data else None,
                      last_id=data[-1].id if data else None, has_more=page.has_more)
