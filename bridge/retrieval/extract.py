"""Text extraction: the bytes of a stored file to the text that is chunked and indexed.

The kind is told by the filename's extension: plain text and Markdown (and other text formats)
must be UTF-8; HTML is reduced to its text with the standard library's parser; PDFs are read
with pypdf, which bounds what one stream may inflate to, and at most MAX_PDF_PAGES pages of
them; Word documents (.docx) with python-docx, once the archive's declared sizes show it
inflates to at most MAX_DOCX_INFLATED_BYTES (a zip bomb is refused unread). Anything else is refused as `unsupported_file`. Extraction never raises anything but
`ExtractionError`: a file that breaks a parser is the file's `invalid_file`, never the process's.
"""

from __future__ import annotations

import io
import logging
import zipfile
from html.parser import HTMLParser

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = frozenset({"txt", "text", "md", "markdown", "rst", "csv", "tsv", "json", "log",
                             "py", "js", "ts", "java", "c", "h", "cpp", "go", "rb", "sh", "css",
                             "tex", "yaml", "yml", "toml", "xml"})
HTML_EXTENSIONS = frozenset({"html", "htm"})
MAX_PDF_PAGES = 2000
MAX_DOCX_INFLATED_BYTES = 256 * 1024 * 1024
MAX_DOCX_MEMBERS = 10_000


class ExtractionError(Exception):
    """A file whose text cannot be had; `code` is the vector store file's `last_error.code`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def extension(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError("invalid_file", f"The file is not valid UTF-8 text (byte "
                                              f"{exc.start}).") from None


class _TextOfHTML(HTMLParser):
    # What browsers never show as text.
    HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "section", "article", "pre", "blockquote", "table", "ul", "ol"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def _html(data: bytes) -> str:
    parser = _TextOfHTML()
    parser.feed(_utf8(data))
    parser.close()
    return "".join(parser.parts)


def _pdf(data: bytes, limit: int) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("invalid_file", "The PDF is encrypted.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise ExtractionError("invalid_file", f"The PDF has more than {MAX_PDF_PAGES} pages.")
        parts, size = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            size += len(text.encode())
            if size > limit:
                raise ExtractionError("invalid_file", f"The PDF yields more than {limit} bytes "
                                                      "of text.")
            parts.append(text)
    except ExtractionError:
        raise
    except Exception as exc:  # hostile input: whatever the parser trips on
        log.info("unreadable PDF: %s", exc)
        raise ExtractionError("invalid_file", "The PDF could not be read.") from None
    return "\n\n".join(parts)


def _docx(data: bytes) -> str:
    import docx

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_DOCX_MEMBERS or sum(
                    member.file_size for member in members) > MAX_DOCX_INFLATED_BYTES:
                raise ExtractionError("invalid_file", "The document inflates beyond "
                                                      f"{MAX_DOCX_INFLATED_BYTES} bytes.")
        document = docx.Document(io.BytesIO(data))
        parts = [paragraph.text for paragraph in document.paragraphs]
        for table in document.tables:
            parts.extend(cell.text for row in table.rows for cell in row.cells)
    except ExtractionError:
        raise
    except Exception as exc:  # hostile input: whatever the parser trips on
        log.info("unreadable DOCX: %s", exc)
        raise ExtractionError("invalid_file", "The Word document could not be read.") from None
    return "\n".join(parts)


def extract_text(filename: str, data: bytes, limit: int) -> str:
    """The text of a file, at most `limit` bytes of it, or ExtractionError."""
    kind = extension(filename)
    if kind in TEXT_EXTENSIONS or kind == "":
        text = _utf8(data)
    elif kind in HTML_EXTENSIONS:
        text = _html(data)
    elif kind == "pdf":
        text = _pdf(data, limit)
    elif kind == "docx":
        text = _docx(data)
    else:
        raise ExtractionError("unsupported_file", f"Files of type '.{kind}' cannot be searched "
                                                  "yet: text, Markdown, HTML, PDF and DOCX can.")
    if "\x00" in text:
        raise ExtractionError("invalid_file", "The file holds NUL characters: it is not text.")
    if not text.strip():
        raise ExtractionError("invalid_file", "The file holds no text.")
    return text
