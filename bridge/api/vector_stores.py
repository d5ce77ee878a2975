"""Vector stores: the caller's stores, the files attached to them (one at a time or in batches),
and search over them."""

from flask import Blueprint, current_app

from .. import retrieval
from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import VectorStore, VectorStoreFile
from ..registry import (file_batch_in_vector_store, file_in_vector_store, files_of_file_batch,
                        files_of_vector_store, paginate, vector_store_for_user,
                        vector_stores_of_user)
from ..schemas import (DeletedObject, ListObject, ListQuery, SearchResultsPage, VectorStoreCreate,
                       VectorStoreFileBatchCreate, VectorStoreFileBatchObject,
                       VectorStoreFileCreate, VectorStoreFileListQuery, VectorStoreFileObject,
                       VectorStoreModify, VectorStoreObject, VectorStoreSearch)
from . import endpoint
from .pages import list_object

bp = Blueprint("vector_stores", __name__, url_prefix="/v1")
bp.before_request(require_user)
STORE = "/vector_stores/<vector_store_id>"
STORE_FILE = STORE + "/files/<file_id>"
FILE_BATCH = STORE + "/file_batches/<batch_id>"


@endpoint(bp, "/vector_stores", "POST", body=VectorStoreCreate, response=VectorStoreObject,
          summary="Create a vector store, optionally with files")
def create_vector_store(body: VectorStoreCreate):
    """A new store of the caller's; its files are ingested in the background."""
    return retrieval.vector_store_object(retrieval.create_vector_store(current_user_id(), body))


@endpoint(bp, "/vector_stores", "GET", query=ListQuery, response=ListObject[VectorStoreObject],
          summary="List the caller's vector stores")
def list_vector_stores(query: ListQuery):
    """The caller's own stores."""
    page = paginate(vector_stores_of_user(current_user_id()), VectorStore, query)
    return list_object(page, retrieval.vector_store_object)


@endpoint(bp, STORE, "GET", response=VectorStoreObject, summary="Retrieve a vector store")
def get_vector_store(vector_store_id: str):
    """One of the caller's stores."""
    return retrieval.vector_store_object(vector_store_for_user(vector_store_id, current_user_id()))


@endpoint(bp, STORE, "POST", body=VectorStoreModify, response=VectorStoreObject,
          summary="Modify a vector store's name, metadata or expiry")
def modify_vector_store(vector_store_id: str, body: VectorStoreModify):
    """Change one of the caller's stores."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    return retrieval.vector_store_object(retrieval.modify_vector_store(store, body))


@endpoint(bp, STORE, "DELETE", response=DeletedObject, summary="Delete a vector store")
def delete_vector_store(vector_store_id: str):
    """Delete one of the caller's stores (here and at the provider); its files stay."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    copy = store.upstream_id
    retrieval.delete_vector_store(store)
    current_engine().copies_deleted(vector_stores=[copy])
    return DeletedObject(id=vector_store_id, object="vector_store.deleted")


@endpoint(bp, STORE + "/files", "POST", body=VectorStoreFileCreate,
          response=VectorStoreFileObject, summary="Attach a file to a vector store")
def create_vector_store_file(vector_store_id: str, body: VectorStoreFileCreate):
    """Attach one of the caller's files; it is ingested in the background."""
    user_id = current_user_id()
    store = vector_store_for_user(vector_store_id, user_id)
    return retrieval.vector_store_file_object(retrieval.attach_file(store, user_id, body),
                                              store.id)


@endpoint(bp, STORE + "/files", "GET", query=VectorStoreFileListQuery,
          response=ListObject[VectorStoreFileObject], summary="List a vector store's files")
def list_vector_store_files(vector_store_id: str, query: VectorStoreFileListQuery):
    """The files of one of the caller's stores, optionally in one status."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    page = paginate(files_of_vector_store(store, query.filter), VectorStoreFile, query)
    return list_object(page, lambda row: retrieval.vector_store_file_object(row, store.id))


@endpoint(bp, STORE_FILE, "GET", response=VectorStoreFileObject,
          summary="Retrieve a vector store file")
def get_vector_store_file(vector_store_id: str, file_id: str):
    """One file of one of the caller's stores: poll it until it is no longer in_progress."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    return retrieval.vector_store_file_object(file_in_vector_store(store, file_id), store.id)


@endpoint(bp, STORE_FILE, "DELETE", response=DeletedObject,
          summary="Take a file out of a vector store")
def delete_vector_store_file(vector_store_id: str, file_id: str):
    """Detach a file from one of the caller's stores; the file itself stays."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    retrieval.detach_file(file_in_vector_store(store, file_id))
    return DeletedObject(id=file_id, object="vector_store.file.deleted")


@endpoint(bp, STORE + "/search", "POST", body=VectorStoreSearch, response=SearchResultsPage,
          summary="Search a vector store (lexical ranking)")
def search_vector_store(vector_store_id: str, body: VectorStoreSearch):
    """The chunks of one of the caller's stores that best match the query."""
    return retrieval.search(vector_store_for_user(vector_store_id, current_user_id()), body)


@endpoint(bp, STORE + "/file_batches", "POST", body=VectorStoreFileBatchCreate,
          response=VectorStoreFileBatchObject, summary="Attach several files to a vector store")
def create_vector_store_file_batch(vector_store_id: str, body: VectorStoreFileBatchCreate):
    """Attach several of the caller's files at once; they are ingested in the background."""
    user_id = current_user_id()
    store = vector_store_for_user(vector_store_id, user_id)
    return retrieval.file_batch_object(retrieval.create_file_batch(store, user_id, body), store.id)


def _with_poll_hint(batch, store_id: str) -> tuple[VectorStoreFileBatchObject, dict[str, str]]:
    # The SDK's create_and_poll waits as long as this header says before polling again.
    shown = retrieval.file_batch_object(batch, store_id)
    headers = {}
    if shown.status == "in_progress":
        headers["openai-poll-after-ms"] = str(current_app.config["BRIDGE_SETTINGS"].POLL_AFTER_MS)
    return shown, headers


@endpoint(bp, FILE_BATCH, "GET", response=VectorStoreFileBatchObject,
          summary="Retrieve a vector store file batch")
def get_vector_store_file_batch(vector_store_id: str, batch_id: str):
    """One batch of one of the caller's stores: poll it until no file is in_progress."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    return _with_poll_hint(file_batch_in_vector_store(store, batch_id), store.id)


@endpoint(bp, FILE_BATCH + "/cancel", "POST", response=VectorStoreFileBatchObject,
          summary="Cancel a vector store file batch")
def cancel_vector_store_file_batch(vector_store_id: str, batch_id: str):
    """Stop ingesting a batch's files; those still in_progress end cancelled."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    batch = retrieval.cancel_file_batch(file_batch_in_vector_store(store, batch_id))
    return retrieval.file_batch_object(batch, store.id)


@endpoint(bp, FILE_BATCH + "/files", "GET", query=VectorStoreFileListQuery,
          response=ListObject[VectorStoreFileObject], summary="List a file batch's files")
def list_vector_store_file_batch_files(vector_store_id: str, batch_id: str,
                                       query: VectorStoreFileListQuery):
    """The files of one batch of one of the caller's stores, optionally in one status."""
    store = vector_store_for_user(vector_store_id, current_user_id())
    batch = file_batch_in_vector_store(store, batch_id)
    page = paginate(files_of_file_batch(batch, query.filter), VectorStoreFile, query)
    return list_object(page, lambda row: retrieval.vector_store_file_object(row, store.id))
