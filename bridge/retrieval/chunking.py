"""Chunking by tokens. A token is a run of non-space characters (no tokenizer model is
installed): a chunk is `max_chunk_size_tokens` of them, each chunk starting
`max - overlap` tokens after the previous, and each keeps the file's own text between its first
and last token.
"""

from __future__ import annotations

import re
from typing import Iterator

_TOKEN = re.compile(r"\S+")

# OpenAI's `auto` strategy, as it documents it.
AUTO = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


def chunks(text: str, max_tokens: int, overlap: int) -> Iterator[str]:
    """The chunks of `text`, in order."""
    spans = [match.span() for match in _TOKEN.finditer(text)]
    step = max_tokens - overlap
    for start in range(0, len(spans), step):
        window = spans[start:start + max_tokens]
        yield text[window[0][0]:window[-1][1]]
        if start + max_tokens >= len(spans):
            break
