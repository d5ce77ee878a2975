"""Assistants in the registry: created by admins over the API or by the setup command.

The registry's copy is the one runs use; an engine whose upstream keeps assistants of its own
(`assistants`) is told of every change.
"""

from __future__ import annotations

from .engines import current_engine
from .extensions import db
from .models import Assistant
from .registry import assistant_by_name, new_id
from .schemas import AssistantCreate, AssistantModify


def _fields(body: AssistantCreate | AssistantModify) -> dict:
    values = body.model_dump(exclude_unset=True, exclude={"reasoning_effort"})
    if "tools" in values:
        values["tools"] = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    if "metadata" in values:
        values["meta"] = values.pop("metadata") or {}
    return values


def create_assistant(body: AssistantCreate) -> Assistant:
    """Insert a new assistant."""
    assistant = Assistant(id=new_id("asst"), tools=[], meta={})
    for name, value in _fields(body).items():
        setattr(assistant, name, value)
    db.session.add(assistant)
    db.session.commit()
    try:
        current_engine().assistant_saved(assistant)
    except BaseException:
        db.session.delete(assistant)  # the admin sees the error: nothing half-made remains
        db.session.commit()
        raise
    return assistant


def modify_assistant(assistant: Assistant, body: AssistantModify) -> Assistant:
    """Change the fields the body sets; the others keep their values."""
    for name, value in _fields(body).items():
        if name == "model" and value is None:
            continue  # an assistant always has a model
        setattr(assistant, name, value)
    db.session.commit()
    current_engine().assistant_saved(assistant)
    return assistant


def delete_assistant(assistant: Assistant) -> None:
    """Remove an assistant; runs that used it keep their copy of its settings."""
    current_engine().assistant_deleted(assistant)
    db.session.delete(assistant)
    db.session.commit()


def provision_assistant(body: AssistantCreate) -> tuple[Assistant, bool]:
    """Create the assistant, or update the one with the same name: idempotent by name."""
    existing = assistant_by_name(body.name) if body.name else None
    if existing is None:
        return create_assistant(body), True
    return modify_assistant(existing, AssistantModify(**body.model_dump(exclude_unset=True))), False
