"""A small shipped corpus for retrieval quality: twelve documents on distinct topics, and
questions each naming the one file that answers it (questions.json).

Text, Markdown and HTML files are uploaded as they are. The PDF and Word documents are made
from the plain text under `pdf/` and `docx/` when they are loaded, so that the repository holds
no binary fixtures: `pdf/solar_eclipses.txt` is uploaded as `solar_eclipses.pdf`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE_LINES = 40  # so that a few KB of text makes a PDF of several pages


def text_pdf(text: str) -> bytes:
    """A PDF showing `text` line by line in Helvetica, PAGE_LINES lines a page, with a correct
    cross-reference table. The text must be ASCII (the font's encoding)."""
    lines = text.splitlines()
    pages = [lines[start:start + PAGE_LINES] for start in range(0, len(lines), PAGE_LINES)]
    font = 3 + 2 * len(pages)  # after the catalog, the page tree and each page with its stream
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
                   b" ".join(b"%d 0 R" % (3 + 2 * n) for n in range(len(pages))), len(pages))]
    for n, page in enumerate(pages):
        shown = b" T* ".join(b"(%s) Tj" % _pdf_string(line) for line in page)
        stream = b"BT /F1 10 Tf 13 TL 60 760 Td " + shown + b" ET"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * n, font))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def _pdf_string(line: str) -> bytes:
    return line.encode("ascii").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_docx(text: str) -> bytes:
    """A Word document with one paragraph per paragraph of `text` (blank-line separated)."""
    import docx

    document = docx.Document()
    for paragraph in text.split("\n\n"):
        document.add_paragraph(" ".join(paragraph.split()))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def documents() -> dict[str, bytes]:
    """Every document of the corpus, by the filename it is uploaded as."""
    found = {path.name: path.read_bytes() for path in sorted(HERE.iterdir())
             if path.is_file() and path.suffix in (".txt", ".md", ".html")}
    for path in sorted((HERE / "pdf").glob("*.txt")):
        found[path.stem + ".pdf"] = text_pdf(path.read_text())
    for path in sorted((HERE / "docx").glob("*.txt")):
        found[path.stem + ".docx"] = text_docx(path.read_text())
    return found


def questions() -> list[tuple[str, str]]:
    """(question, filename of the document that answers it), in the file's order."""
    return [(item["question"], item["file"])
            for item in json.loads((HERE / "questions.json").read_text())]
