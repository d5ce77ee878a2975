"""Assistants: every user may read them; only admin tokens may change them."""

from flask import Blueprint
from sqlalchemy import select

from ..auth import current_user_id, require_user
from ..models import Assistant
from .. import provisioning
from ..registry import assistant_by_id, paginate
from ..retrieval import resources
from ..schemas import (AssistantCreate, AssistantModify, AssistantObject, DeletedObject, ListObject,
                       ListQuery, assistant_object)
from . import endpoint
from .pages import list_object

bp = Blueprint("assistants", __name__, url_prefix="/v1")
bp.before_request(require_user)


@endpoint(bp, "/assistants", "GET", query=ListQuery, response=ListObject[AssistantObject],
          summary="List assistants")
def list_assistants(query: ListQuery):
    """A page of the assistants this bridge serves."""
    return list_object(paginate(select(Assistant), Assistant, query), assistant_object)


@endpoint(bp, "/assistants/<assistant_id>", "GET", response=AssistantObject,
          summary="Retrieve an assistant")
def get_assistant(assistant_id: str):
    """One assistant."""
    return assistant_object(assistant_by_id(assistant_id, param="assistant_id"))


@endpoint(bp, "/assistants", "POST", body=AssistantCreate, response=AssistantObject,
          summary="Create an assistant (admin)", admin=True)
def create_assistant(body: AssistantCreate):
    """Create an assistant; admin tokens only. Its vector stores and files are the admin's."""
    return assistant_object(provisioning.create_assistant(_checked(body)))


@endpoint(bp, "/assistants/<assistant_id>", "POST", body=AssistantModify, response=AssistantObject,
          summary="Modify an assistant (admin)", admin=True)
def modify_assistant(assistant_id: str, body: AssistantModify):
    """Change an assistant; admin tokens only."""
    assistant = assistant_by_id(assistant_id)
    return assistant_object(provisioning.modify_assistant(assistant, _checked(body)))


def _checked(body):
    """The body with its tool resources checked as the admin's own (inline stores made)."""
    if body.tool_resources is None:
        return body
    return body.model_copy(update={"tool_resources": resources.checked_tool_resources(
        current_user_id(), body.tool_resources)})


@endpoint(bp, "/assistants/<assistant_id>", "DELETE", response=DeletedObject,
          summary="Delete an assistant (admin)", admin=True)
def delete_assistant(assistant_id: str):
    """Delete an assistant; admin tokens only. Runs that used it keep their record."""
    provisioning.delete_assistant(assistant_by_id(assistant_id))
    return DeletedObject(id=assistant_id, object="assistant.deleted")
