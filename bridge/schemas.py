"""Request and response shapes of the Assistants API v2, as pydantic models.

The same models validate requests and generate /openapi.json, so the spec cannot drift from the
code. Request models forbid unknown fields, as OpenAI did; limits follow OpenAI's documentation.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_type_hints

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field,
                      StringConstraints, Tag, WithJsonSchema, field_validator, model_validator,
                      with_config)
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict

ThreadId = Annotated[str, StringConstraints(max_length=64)]
Text = Annotated[str, StringConstraints(max_length=256_000)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]
# A thread's metadata also carries the owner stamp, and upstreams allow 16 keys in all.
ThreadMetadata = Annotated[dict[MetadataKey, MetadataValue], Field(
    max_length=15, description="At most 15 keys: the bridge adds `user_id` as the 16th.")]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# `name` of functions and JSON schemas, as OpenAI constrains it.
Name = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]

RESERVED_METADATA_KEY = "user_id"

# JSON types as OpenAI checks them: "1.5" is not a number, 300.0 not an integer, 1 not a boolean.
STRICT = ConfigDict(extra="forbid", strict=True)

# The serialised size of one free-form object (a function's parameters, a JSON schema). Depth is
# bounded for the whole body (bridge/api/bodies.py); this bounds what one field may store.
MAX_FREE_FORM_BYTES = 64 * 1024


def _bounded_size(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_FREE_FORM_BYTES:
        raise PydanticCustomError(
            "too_large", "at most {limit} bytes of JSON are allowed, this is {size}",
            {"limit": MAX_FREE_FORM_BYTES, "size": size})
    return value


FreeFormObject = Annotated[dict[str, Any], AfterValidator(_bounded_size), Field(
    description=f"A JSON object of at most {MAX_FREE_FORM_BYTES} bytes.")]


class Request(BaseModel):
    model_config = STRICT


# ---- unions told apart by a field ------------------------------------------------------------

def _type_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"type={kind}" if isinstance(kind, str) else None


def by_type(*members: type, noun: str) -> Any:
    """A union of objects told apart by their `type` literal.

    The tags are not field names (`type=function`), so an error inside a member names the
    member's own fields (`tools.0.function.name`), and an unknown `type` is one clear error.
    """
    tags = {get_args(get_type_hints(member)["type"])[0]: member for member in members}
    expected = ", ".join(f"'{tag}'" for tag in tags)
    return Annotated[
        Union[tuple(Annotated[member, Tag(f"type={tag}")] for tag, member in tags.items())],
        Discriminator(_type_tag, custom_error_type="invalid_union_member",
                      custom_error_message=f"must be {noun} whose 'type' is one of {expected}")]


def _mode_or_object(value: Any) -> str | None:
    if isinstance(value, str):
        return "as-string"
    if isinstance(value, dict):
        return "as-object"
    return None


def mode_or_object(modes: Any, objects: Any, *, expected: str) -> Any:
    """One of a few strings, or an object; anything else is one clear error."""
    return Annotated[
        Union[Annotated[modes, Tag("as-string")], Annotated[objects, Tag("as-object")]],
        Discriminator(_mode_or_object, custom_error_type="invalid_option",
                      custom_error_message=f"must be {expected}")]


# ---- tools ---------------------------------------------------------------------------------

class FunctionDefinition(Request):
    name: Name
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    parameters: FreeFormObject | None = None
    strict: bool | None = None


class FunctionTool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class CodeInterpreterTool(Request):
    type: Literal["code_interpreter"]


class RankingOptions(Request):
    score_threshold: Annotated[float, Field(ge=0, le=1)]
    ranker: Literal["auto", "default_2024_08_21"] | None = None


class FileSearchSettings(Request):
    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None


class FileSearchTool(Request):
    type: Literal["file_search"]
    file_search: FileSearchSettings | None = None


Tool = by_type(FunctionTool, CodeInterpreterTool, FileSearchTool, noun="a tool")
Tools = Annotated[list[Tool], Field(max_length=128)]


# Options a run or an assistant takes as plain JSON and keeps as the client sent them: typed
# dicts, so a validated value is stored and passed upstream unchanged.

@with_config(STRICT)
class TextFormat(TypedDict):
    type: Literal["text"]


@with_config(STRICT)
class JsonObjectFormat(TypedDict):
    type: Literal["json_object"]


@with_config(STRICT)
class JsonSchemaSpec(TypedDict):
    name: Name
    description: NotRequired[Annotated[str, StringConstraints(max_length=1024)]]
    schema: NotRequired[FreeFormObject]
    strict: NotRequired[bool | None]


@with_config(STRICT)
class JsonSchemaFormat(TypedDict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = mode_or_object(
    Literal["auto"], by_type(TextFormat, JsonObjectFormat, JsonSchemaFormat, noun="an object"),
    expected="'auto' or an object with 'type' 'text', 'json_object' or 'json_schema'")


@with_config(STRICT)
class ChosenFunction(TypedDict):
    name: Name


@with_config(STRICT)
class ToolChoiceObject(TypedDict):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NotRequired[ChosenFunction]


def _function_named(choice: dict[str, Any]) -> dict[str, Any]:
    if (choice["type"] == "function") != ("function" in choice):
        raise PydanticCustomError(
            "function_choice", "'function' with a 'name' is required when 'type' is 'function', "
                               "and only then")
    return choice


ToolChoice = mode_or_object(
    Literal["none", "auto", "required"], Annotated[ToolChoiceObject, AfterValidator(_function_named)],
    expected="'none', 'auto', 'required' or an object with 'type' 'function' (and 'function': "
             "{'name'}), 'code_interpreter' or 'file_search'")


@with_config(STRICT)
class TruncationStrategy(TypedDict):
    type: Literal["auto", "last_messages"]
    last_messages: NotRequired[Annotated[int, Field(ge=1, le=2**31 - 1)] | None]


@with_config(STRICT)
class CodeInterpreterResources(TypedDict):
    file_ids: NotRequired[Annotated[list[ObjectId], Field(max_length=20)]]


def check_overlap(max_chunk_size_tokens: int, chunk_overlap_tokens: int) -> None:
    """OpenAI's rule for static chunking: the overlap is at most half a chunk."""
    if chunk_overlap_tokens > max_chunk_size_tokens // 2:
        raise PydanticCustomError(
            "overlap_too_large", "chunk_overlap_tokens must not exceed half of "
            "max_chunk_size_tokens ({limit})", {"limit": max_chunk_size_tokens // 2})


def _overlap_at_most_half(static: "StaticChunks") -> "StaticChunks":
    check_overlap(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
    return static


@with_config(STRICT)
class StaticChunks(TypedDict):
    max_chunk_size_tokens: Annotated[int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, Field(ge=0, le=2048)]


@with_config(STRICT)
class AutoChunking(TypedDict):
    type: Literal["auto"]


@with_config(STRICT)
class StaticChunking(TypedDict):
    type: Literal["static"]
    static: Annotated[StaticChunks, AfterValidator(_overlap_at_most_half)]


@with_config(STRICT)
class NewVectorStore(TypedDict):
    file_ids: NotRequired[Annotated[list[ObjectId], Field(max_length=10_000)]]
    chunking_strategy: NotRequired[by_type(AutoChunking, StaticChunking, noun="an object")]
    metadata: NotRequired[Metadata | None]


@with_config(STRICT)
class FileSearchResources(TypedDict):
    vector_store_ids: NotRequired[Annotated[list[ObjectId], Field(max_length=1)]]
    vector_stores: NotRequired[Annotated[list[NewVectorStore], Field(max_length=1)]]


@with_config(STRICT)
class ToolResources(TypedDict):
    code_interpreter: NotRequired[CodeInterpreterResources]
    file_search: NotRequired[FileSearchResources]


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


class AttachmentFileSearch(Request):
    type: Literal["file_search"]


class Attachment(Request):
    """A file sent with a message, and the tools it is for."""

    file_id: ObjectId
    tools: Annotated[list[by_type(CodeInterpreterTool, AttachmentFileSearch, noun="a tool")],
                     Field(max_length=2)] = []


class MessageCreate(Request):
    """POST /v1/threads/{thread_id}/messages, and each entry of `messages` elsewhere."""

    role: Literal["user", "assistant"]
    content: MessageContent
    attachments: Annotated[list[Attachment], Field(max_length=20)] | None = Field(
        default=None, description="Files with `file_search` go into the thread's vector store "
        "(one is made when the thread has none).")
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
    tool_resources: ToolResources | None = None

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

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


Stream = Annotated[bool | None, Field(
    description="Answer with the run's events as `text/event-stream` instead of the run object.")]


class RunOptions(Request):
    """Fields a run takes on top of the assistant's own settings."""

    assistant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    instructions: Text | None = None
    tools: Tools | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    # Upper bound: the registry keeps them in 32-bit integer columns.
    max_prompt_tokens: Annotated[int, Field(ge=256, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=16, le=2**31 - 1)] | None = None
    response_format: ResponseFormat | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    truncation_strategy: TruncationStrategy | None = None
    reasoning_effort: ReasoningEffort | None = None
    stream: Stream = None


class RunCreate(RunOptions):
    additional_instructions: Text | None = None
    additional_messages: Annotated[list[MessageCreate], Field(max_length=32)] | None = None


class ThreadAndRunCreate(RunOptions):
    thread: ThreadCreate | None = None
    tool_resources: ToolResources | None = None


class RunModify(Request):
    metadata: Metadata | None = None


class ToolOutput(Request):
    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    output: Text = ""


class ToolOutputsSubmit(Request):
    tool_outputs: Annotated[list[ToolOutput], Field(min_length=1, max_length=128)]
    stream: Stream = None


# ---- assistants ----------------------------------------------------------------------------

class AssistantFields(Request):
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    description: Annotated[str, StringConstraints(max_length=512)] | None = None
    instructions: Text | None = None
    tools: Tools | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class AssistantCreate(AssistantFields):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AssistantModify(AssistantFields):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None


# ---- files ---------------------------------------------------------------------------------

# The purposes OpenAI takes for an upload.
FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


class FileCreate(Request):
    """POST /v1/files: a multipart/form-data body of the file part and its purpose."""

    # The upload as the form parser gives it; only a part sent with a filename is one.
    file: Annotated[Any, WithJsonSchema({
        "type": "string", "format": "binary",
        "description": "The file's contents, a part with a filename."})]
    purpose: FilePurpose


# ---- vector stores ---------------------------------------------------------------------------

class StaticChunkingOptions(Request):
    max_chunk_size_tokens: Annotated[int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _overlap_at_most_half(self):
        check_overlap(self.max_chunk_size_tokens, self.chunk_overlap_tokens)
        return self


class AutoChunkingStrategy(Request):
    type: Literal["auto"]


class StaticChunkingStrategy(Request):
    type: Literal["static"]
    static: StaticChunkingOptions


ChunkingStrategy = by_type(AutoChunkingStrategy, StaticChunkingStrategy, noun="an object")


class ExpiresAfter(Request):
    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


AttributeValue = Union[Annotated[str, StringConstraints(max_length=512)], bool, int, float]
Attributes = Annotated[dict[MetadataKey, AttributeValue], Field(max_length=16)]
VectorStoreName = Annotated[str, StringConstraints(max_length=256)]


class VectorStoreModify(Request):
    """POST /v1/vector_stores/{vector_store_id}."""

    name: VectorStoreName | None = None
    metadata: Metadata | None = None
    expires_after: ExpiresAfter | None = None


class VectorStoreCreate(Request):
    """POST /v1/vector_stores."""

    name: VectorStoreName | None = None
    description: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="Accepted and not kept: the vector store object has no "
        "description.")
    file_ids: Annotated[list[ObjectId], Field(max_length=500)] | None = None
    metadata: Metadata | None = None
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = Field(
        default=None, description="Only with `file_ids`; `auto` is static, 800 tokens, 400 overlap.")


class VectorStoreFileCreate(Request):
    """POST /v1/vector_stores/{vector_store_id}/files."""

    file_id: ObjectId
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


# OpenAI's largest batch.
MAX_FILE_BATCH_FILES = 2000


class FileBatchEntry(Request):
    """One file of a batch, with its own attributes and chunking."""

    file_id: ObjectId
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileBatchCreate(Request):
    """POST /v1/vector_stores/{vector_store_id}/file_batches: `file_ids` or `files`, not both."""

    # The rule the view enforces, stated in the spec too: exactly one of the two lists.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"oneOf": [
        {"required": ["file_ids"], "properties": {"file_ids": {"type": "array"},
                                                  "files": {"type": "null"}}},
        {"required": ["files"], "properties": {"files": {"type": "array"},
                                               "file_ids": {"type": "null"}}}]})

    file_ids: Annotated[list[ObjectId], Field(
        min_length=1, max_length=MAX_FILE_BATCH_FILES)] | None = None
    files: Annotated[list[FileBatchEntry], Field(
        min_length=1, max_length=MAX_FILE_BATCH_FILES)] | None = None
    attributes: Attributes | None = Field(
        default=None, description="For every file of `file_ids`; ignored with `files`, as "
        "OpenAI ignores it.")
    chunking_strategy: ChunkingStrategy | None = Field(
        default=None, description="For every file of `file_ids`; ignored with `files`, as "
        "OpenAI ignores it.")


class SearchRankingOptions(Request):
    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: Annotated[float, Field(ge=0, le=1)] | None = None


SearchQueryText = Annotated[str, StringConstraints(max_length=4096)]


class VectorStoreSearch(Request):
    """POST /v1/vector_stores/{vector_store_id}/search."""

    query: SearchQueryText | Annotated[list[SearchQueryText], Field(min_length=1, max_length=16)]
    max_num_results: Annotated[int, Field(ge=1, le=50)] = 10
    filters: FreeFormObject | None = Field(
        default=None, description="Not supported yet: a request with filters is a 400.")
    ranking_options: SearchRankingOptions | None = None
    rewrite_query: bool | None = Field(default=None, description="Accepted and ignored.")


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


# The one value OpenAI documents: file_search result contents inside tool_calls steps.
SEARCH_CONTENTS = "step_details.tool_calls[*].file_search.results[*].content"
StepInclude = Literal["step_details.tool_calls[*].file_search.results[*].content"]
StepIncludes = Annotated[list[StepInclude] | None, Field(alias="include[]")]


class FileListQuery(ListQuery):
    """GET /v1/files: OpenAI's limits for this list (1 to 10,000, all by default) and a filter."""

    limit: Annotated[int, Field(ge=1, le=10_000)] = 10_000
    purpose: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class VectorStoreFileListQuery(ListQuery):
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None


class StepQuery(BaseModel):
    """GET a run step: `include[]`, as the SDK sends it."""

    model_config = ConfigDict(extra="ignore")

    include: StepIncludes = None


class StepListQuery(ListQuery):
    include: StepIncludes = None


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


class FunctionCall(BaseModel):
    name: str
    arguments: str
    output: str | None = None


class FunctionToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ToolCallsStepDetails(BaseModel):
    type: Literal["tool_calls"]
    # Function calls in their documented shape; code_interpreter and file_search calls that an
    # Assistants upstream ran are passed on as it reported them.
    tool_calls: list[FunctionToolCall | dict[str, Any]]


class MessageCreation(BaseModel):
    message_id: str


class MessageCreationStepDetails(BaseModel):
    type: Literal["message_creation"]
    message_creation: MessageCreation


class StepLastError(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded"]
    message: str


class RunStepObject(BaseModel):
    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    run_id: str
    assistant_id: str
    thread_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"]
    cancelled_at: int | None = None
    completed_at: int | None = None
    expired_at: int | None = None
    failed_at: int | None = None
    last_error: StepLastError | None = None
    step_details: Annotated[MessageCreationStepDetails | ToolCallsStepDetails,
                            Field(discriminator="type")]
    usage: Usage | None = None
    metadata: dict[str, str] = {}


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


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    # Deprecated by OpenAI, still sent: a stored file is ready at once.
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileCounts(BaseModel):
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int


class VectorStoreObject(BaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: dict[str, Any] | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: dict[str, str]


class VectorStoreFileError(BaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class VectorStoreFileObject(BaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: VectorStoreFileError | None = None
    chunking_strategy: dict[str, Any]
    attributes: dict[str, Any] | None = None


class VectorStoreFileBatchObject(BaseModel):
    id: str
    # As the SDK's type spells it.
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class SearchContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any] | None = None
    content: list[SearchContent]


class SearchResultsPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


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

def text_block(value: str, annotations: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """One text content part in the wire shape."""
    return {"type": "text", "text": {"value": value, "annotations": list(annotations)}}


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


def message_creation_details(message_id: str) -> dict[str, Any]:
    """The `step_details` of a step that wrote one message."""
    return {"type": "message_creation", "message_creation": {"message_id": message_id}}


def tool_calls_details(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The `step_details` of a step that asked for tool calls, given in the run's
    `required_action` shape (or as an upstream reported them); outputs not given are null."""
    return {"type": "tool_calls", "tool_calls": [
        {**call, "function": {**call["function"], "output": call["function"].get("output")}}
        if call.get("type") == "function" else call for call in calls]}


def file_search_details(calls, ranking_options: dict[str, Any]) -> dict[str, Any]:
    """The `step_details` of file searches the bridge ran (`FileSearchCall`s), result contents
    included; readers leave the contents out unless asked."""
    return {"type": "tool_calls", "tool_calls": [
        {"id": call.id, "type": "file_search", "file_search": {
            "ranking_options": ranking_options,
            "results": [{"file_id": passage.file_id, "file_name": passage.filename,
                         "score": passage.score,
                         "content": [{"type": "text", "text": passage.text}]}
                        for passage in call.passages]}}
        for call in calls]}


def without_search_contents(details: dict[str, Any]) -> dict[str, Any]:
    """A step's details with the file_search results' contents left out, as OpenAI shows them
    unless `include[]` asks."""
    if details.get("type") != "tool_calls":
        return details
    calls = []
    for call in details["tool_calls"]:
        search = call.get("file_search") if call.get("type") == "file_search" else None
        if search and search.get("results"):
            call = {**call, "file_search": {**search, "results": [
                {key: value for key, value in result.items() if key != "content"}
                for result in search["results"]]}}
        calls.append(call)
    return {**details, "tool_calls": calls}


def run_step_object(step, thread_id: str, run_id: str, *,
                    search_contents: bool = False) -> RunStepObject:
    """A step; file_search results carry their contents only with `search_contents`."""
    details = step.step_details if search_contents else without_search_contents(
        step.step_details)
    return RunStepObject(
        id=step.id, created_at=step.created_at, run_id=run_id, assistant_id=step.assistant_id,
        thread_id=thread_id, type=step.type, status=step.status, cancelled_at=step.cancelled_at,
        completed_at=step.completed_at, expired_at=step.expired_at, failed_at=step.failed_at,
        last_error=step.last_error, step_details=details,
        # OpenAI counts a step's tokens once it has ended.
        usage=None if step.status == "in_progress" else step.usage)


def assistant_object(assistant) -> AssistantObject:
    return AssistantObject(
        id=assistant.id, created_at=assistant.created_at, name=assistant.name,
        description=assistant.description, model=assistant.model,
        instructions=assistant.instructions, tools=assistant.tools or [],
        tool_resources=assistant.tool_resources, metadata=assistant.meta or {},
        temperature=assistant.temperature, top_p=assistant.top_p,
        response_format=assistant.response_format or "auto")


def file_object(file) -> FileObject:
    return FileObject(id=file.id, bytes=file.bytes, created_at=file.created_at,
                      filename=file.filename, purpose=file.purpose)
