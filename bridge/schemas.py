"""Request and response shapes of the Assistants API v2, as pydantic models.

The same models validate requests and generate /openapi.json, so the spec cannot drift from the
code. Request models forbid unknown fields, as OpenAI did; limits follow OpenAI's documentation.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag,
                      field_validator)
from pydantic_core import PydanticCustomError

ThreadId = Annotated[str, StringConstraints(max_length=64)]
Text = Annotated[str, StringConstraints(max_length=256_000)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]
# A thread's metadata also carries the owner stamp, and upstreams allow 16 keys in all.
ThreadMetadata = Annotated[dict[MetadataKey, MetadataValue], Field(
    max_length=15, description="At most 15 keys: the bridge adds `user_id` as the 16th.")]

RESERVED_METADATA_KEY = "user_id"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- tools ---------------------------------------------------------------------------------

class FunctionDefinition(Request):
    name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class CodeInterpreterTool(Request):
    type: Literal["code_interpreter"]


class FileSearchTool(Request):
    model_config = ConfigDict(extra="allow")
    type: Literal["file_search"]


Tool = Annotated[FunctionTool | CodeInterpreterTool | FileSearchTool, Field(discriminator="type")]
Tools = Annotated[list[Tool], Field(max_length=128)]


# ---- messages ------------------------------------------------------------------------------

class TextPart(Request):
    type: Literal["text"]
    text: Text


def _content_kind(value: Any) -> str:
    return "text-parts" if isinstance(value, list) else "plain-text"


# A tagged union, so a bad value is reported against the one shape it was meant to have.
MessageContent = Annotated[
    Annotated[Annotated[str, StringConstraints(max_length=256_000)], Tag("plain-text")]
    | Annotated[Annotated[list[TextPart], Field(min_length=1, max_length=100)], Tag("text-parts")],
    Discriminator(_content_kind)]


class MessageCreate(Request):
    """POST /v1/threads/{thread_id}/messages, and each entry of `messages` elsewhere."""

    role: Literal["user", "assistant"]
    content: MessageContent
    attachments: Annotated[list[dict[str, Any]], Field(max_length=0)] | None = Field(
        default=None, description="Files are not supported by this bridge; only an empty list is accepted.")
    metadata: Metadata | None = None

    def text_parts(self) -> list[str]:
        """The content as a list of plain strings."""
        if isinstance(self.content, str):
            return [self.content]
        return [part.text for part in self.content]


class MessageModify(Request):
    metadata: Metadata | None = None


class ThreadModify(Request):
    metadata: ThreadMetadata | None = None
    tool_resources: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _no_user_id(cls, value):
        return reject_user_id(value)


class ThreadCreate(ThreadModify):
    messages: Annotated[list[MessageCreate], Field(max_length=32)] | None = None


def reject_user_id(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """`metadata.user_id` is the owner stamp; only the bridge writes it."""
    if metadata and RESERVED_METADATA_KEY in metadata:
        raise PydanticCustomError(
            "reserved_key", "'{key}' is reserved: the bridge sets it from your token",
            {"key": RESERVED_METADATA_KEY})
    return metadata


# ---- runs ----------------------------------------------------------------------------------

class RunOptions(Request):
    """Fields a run takes on top of the assistant's own settings."""

    assistant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    instructions: Text | None = None
    tools: Tools | None = None
    metadata: Metadata | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    # Upper bound: the registry keeps them in 32-bit integer columns.
    max_prompt_tokens: Annotated[int, Field(ge=256, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=16, le=2**31 - 1)] | None = None
    response_format: Any | None = None
    tool_choice: Any | None = None
    parallel_tool_calls: bool | None = None
    truncation_strategy: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    stream: Literal[False] | None = Field(
        default=None, description="Streaming is not supported yet; only false is accepted.")


class RunCreate(RunOptions):
    additional_instructions: Text | None = None
    additional_messages: Annotated[list[MessageCreate], Field(max_length=32)] | None = None


class ThreadAndRunCreate(RunOptions):
    thread: ThreadCreate | None = None
    tool_resources: dict[str, Any] | None = None


class RunModify(Request):
    metadata: Metadata | None = None


class ToolOutput(Request):
    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    output: Text = ""


class ToolOutputsSubmit(Request):
    tool_outputs: Annotated[list[ToolOutput], Field(min_length=1, max_length=128)]
    stream: Literal[False] | None = Field(
        default=None, description="Streaming is not supported yet; only false is accepted.")


# ---- assistants ----------------------------------------------------------------------------

class AssistantFields(Request):
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    description: Annotated[str, StringConstraints(max_length=512)] | None = None
    instructions: Text | None = None
    tools: Tools | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    response_format: Any | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class AssistantCreate(AssistantFields):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AssistantModify(AssistantFields):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None


# ---- list queries --------------------------------------------------------------------------

Cursor = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ListQuery(BaseModel):
    """Cursor pagination, as OpenAI documented it."""

    model_config = ConfigDict(extra="ignore")

    limit: Annotated[int, Field(ge=1, le=100)] = 20
    order: Literal["asc", "desc"] = "desc"
    after: Cursor | None = None
    before: Cursor | None = None


class MessageListQuery(ListQuery):
    run_id: Cursor | None = None


# ---- response objects ----------------------------------------------------------------------

class TextValue(BaseModel):
    value: str
    annotations: list[Any] = []


class TextContentBlock(BaseModel):
    type: Literal["text"] = "text"
    text: TextValue


class ThreadObject(BaseModel):
    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    metadata: dict[str, str]
    tool_resources: dict[str, Any] | None = None


class MessageObject(BaseModel):
    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: Literal["in_progress", "incomplete", "completed"]
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    role: Literal["user", "assistant"]
    content: list[TextContentBlock]
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[Any] = []
    metadata: dict[str, str]


class LastError(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunObject(BaseModel):
    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: Literal["queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed",
                    "completed", "incomplete", "expired"]
    required_action: dict[str, Any] | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: dict[str, Any] | None = None
    model: str
    instructions: str
    tools: list[Any]
    metadata: dict[str, str]
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] | None = None
    response_format: Any | None = "auto"
    tool_choice: Any | None = "auto"
    parallel_tool_calls: bool = True


class AssistantObject(BaseModel):
    id: str
    object: Literal["assistant"] = "assistant"
    created_at: int
    name: str | None = None
    description: str | None = None
    model: str
    instructions: str | None = None
    tools: list[Any]
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str]
    temperature: float | None = None
    top_p: float | None = None
    response_format: Any | None = "auto"


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True


T = TypeVar("T")


class ListObject(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorObject(BaseModel):
    error: ErrorBody


# ---- serializers: registry rows -> wire objects --------------------------------------------

def text_block(value: str) -> dict[str, Any]:
    """One text content part in the wire shape."""
    return {"type": "text", "text": {"value": value, "annotations": []}}


def thread_object(thread) -> ThreadObject:
    return ThreadObject(id=thread.id, created_at=thread.created_at, metadata=thread.meta or {},
                        tool_resources=thread.tool_resources)


def message_object(message, thread_id: str) -> MessageObject:
    return MessageObject(
        id=message.id, created_at=message.created_at, thread_id=thread_id, status=message.status,
        completed_at=message.completed_at, role=message.role, content=message.content,
        assistant_id=message.assistant_id, run_id=message.run_id,
        attachments=message.attachments or [], metadata=message.meta or {})


def run_object(run, thread_id: str) -> RunObject:
    return RunObject(
        id=run.id, created_at=run.created_at, thread_id=thread_id, assistant_id=run.assistant_id,
        status=run.status, required_action=run.required_action, last_error=run.last_error,
        # The registry keeps the deadline for its sweeper; OpenAI shows it only while it applies.
        expires_at=run.expires_at if run.is_active else None,
        started_at=run.started_at, cancelled_at=run.cancelled_at,
        failed_at=run.failed_at, completed_at=run.completed_at,
        incomplete_details=run.incomplete_details, model=run.model, instructions=run.instructions,
        tools=run.tools or [], metadata=run.meta or {}, usage=run.usage, temperature=run.temperature,
        top_p=run.top_p, max_prompt_tokens=run.max_prompt_tokens,
        max_completion_tokens=run.max_completion_tokens, truncation_strategy=run.truncation_strategy,
        response_format=run.response_format or "auto", tool_choice=run.tool_choice or "auto",
        parallel_tool_calls=run.parallel_tool_calls)


def assistant_object(assistant) -> AssistantObject:
    return AssistantObject(
        id=assistant.id, created_at=assistant.created_at, name=assistant.name,
        description=assistant.description, model=assistant.model,
        instructions=assistant.instructions, tools=assistant.tools or [],
        tool_resources=assistant.tool_resources, metadata=assistant.meta or {},
        temperature=assistant.temperature, top_p=assistant.top_p,
        response_format=assistant.response_format or "auto")
