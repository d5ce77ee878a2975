"""Files: upload, list, retrieve, download and delete the caller's own."""

from flask import Blueprint, send_file

from .. import files
from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import File
from ..registry import file_for_user, files_of_user, paginate
from ..schemas import (DeletedObject, FileCreate, FileListQuery, FileObject, ListObject,
                       file_object)
from . import endpoint
from .pages import list_object

bp = Blueprint("files", __name__, url_prefix="/v1")
bp.before_request(require_user)
FILE = "/files/<file_id>"


@endpoint(bp, "/files", "POST", form=FileCreate, response=FileObject,
          summary="Upload a file (multipart/form-data: file, purpose)")
def create_file(form: FileCreate):
    """Store an upload owned by the caller."""
    return file_object(files.create_file(current_user_id(), form.file.filename, form.purpose,
                                         form.file.stream))


@endpoint(bp, "/files", "GET", query=FileListQuery, response=ListObject[FileObject],
          summary="List the caller's files")
def list_files(query: FileListQuery):
    """The caller's own files, newest first by default, optionally of one purpose."""
    page = paginate(files_of_user(current_user_id(), query.purpose), File, query)
    return list_object(page, file_object)


@endpoint(bp, FILE, "GET", response=FileObject, summary="Retrieve a file's metadata")
def get_file(file_id: str):
    """One of the caller's files."""
    return file_object(file_for_user(file_id, current_user_id()))


@endpoint(bp, FILE + "/content", "GET", response=bytes, summary="Download a file's contents")
def get_file_content(file_id: str):
    """The bytes of one of the caller's files, as an attachment."""
    file = file_for_user(file_id, current_user_id())
    reply = send_file(files.open_content(file), as_attachment=True, download_name=file.filename,
                      conditional=False, etag=False, max_age=None)
    reply.content_length = file.bytes
    # The guess names a type, never a charset: the bytes are the uploader's, in any encoding.
    reply.headers["Content-Type"] = reply.mimetype
    # Another user's bytes never come from a cache, and a browser never renders them as a page
    # of this origin.
    reply.headers["Cache-Control"] = "private, no-store"
    reply.headers["X-Content-Type-Options"] = "nosniff"
    reply.headers["Content-Security-Policy"] = "sandbox"
    return reply


@endpoint(bp, FILE, "DELETE", response=DeletedObject, summary="Delete a file")
def delete_file(file_id: str):
    """Delete one of the caller's files and its contents, here and at the provider."""
    file = file_for_user(file_id, current_user_id())
    copy = file.upstream_id
    files.delete_file(file)
    current_engine().copies_deleted(files=[copy])
    return DeletedObject(id=file_id, object="file")
