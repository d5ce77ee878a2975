"""A reply's citation markers, which ChatKit does not show.

/v1 replies cite as the Assistants API does: a marker in the text, 【0:0†notes.md】, and a
`file_citation` annotation over it. ChatKit cites as the Responses API does: plain text, and
an annotation at the index where the citation belongs, which the front end draws as a source.
So ChatKit's text leaves every marker out, as it is streamed and once it is done.
"""

from __future__ import annotations

import re
from typing import Any

from ..engines.file_search import MARKER

# What a marker's beginning may be, while the rest of it has not arrived yet.
_MARKER_START = re.compile(r"【\d*(?::\d*(?:†[^】]*)?)?")
# A marker is short; text held longer than this is no marker, and is shown.
LONGEST_MARKER = 256


def unmarked(value: str, cited: list[dict[str, Any]]
             ) -> tuple[str, list[tuple[int, dict[str, Any]]]]:
    """`value` without its markers, and each of the `cited` annotations (over a marker) with the
    index in that text where its marker stood."""
    by_start = {citation["start_index"]: citation for citation in cited}
    spans = {match.start(): match.end() for match in MARKER.finditer(value)}
    for start, citation in by_start.items():  # an annotation over text of another form
        if value[start:citation["end_index"]] == citation.get("text"):
            spans.setdefault(start, citation["end_index"])
    text, placed, position = "", [], 0
    for start, end in sorted(spans.items()):
        if start < position:
            continue  # inside a span already left out
        text += value[position:start]
        position = end
        if start in by_start:
            placed.append((len(text), by_start[start]))
    return text + value[position:], placed


class MarkerFilter:
    """A reply's text deltas without markers. A marker may arrive split across deltas, so text
    from a 【 that may begin one is held until the marker is whole (and left out) or cannot be
    one (and shown)."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, delta: str) -> str:
        text = MARKER.sub("", self.held + delta)
        start = text.rfind("【")
        if start != -1 and len(text) - start <= LONGEST_MARKER \
                and _MARKER_START.fullmatch(text, start):
            self.held = text[start:]
            return text[:start]
        self.held = ""
        return text
