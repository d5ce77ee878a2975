"""ChatKit's text of a reply leaves out /v1's citation markers, whole or arriving in pieces."""

from __future__ import annotations

import pytest

from bridge.chatkit.citations import LONGEST_MARKER, MarkerFilter, unmarked

REPLY = "Knights jump 【0:0†chess.txt】; bread needs yeast 【1:2†bread.txt】."
SHOWN = "Knights jump ; bread needs yeast ."


def streamed(pieces: list[str]) -> tuple[list[str], str]:
    """What a filter passes of each piece, and what it holds at the end."""
    texts = MarkerFilter()
    return [texts.feed(piece) for piece in pieces], texts.held


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, len(REPLY)])
def test_markers_split_across_deltas_are_left_out(size):
    shown, held = streamed([REPLY[i:i + size] for i in range(0, len(REPLY), size)])
    assert "".join(shown) == SHOWN and held == ""


@pytest.mark.parametrize("split", range(1, len(REPLY)))
def test_every_split_in_two_leaves_the_markers_out(split):
    shown, held = streamed([REPLY[:split], REPLY[split:]])
    assert "".join(shown) == SHOWN and held == ""


def test_a_bracket_that_begins_no_marker_is_shown_once_it_cannot_be_one():
    shown, held = streamed(["Say 【", "0:", "x】 and 【hi】 please"])
    assert shown == ["Say ", "", "【0:x】 and 【hi】 please"] and held == ""


def test_text_held_too_long_for_a_marker_is_shown():
    long = "【1:1†" + "n" * LONGEST_MARKER
    shown, held = streamed([long[:10], long[10:]])
    assert "".join(shown) == long and held == ""


def test_a_marker_still_open_at_the_end_stays_held():
    shown, held = streamed(["See 【0:", "0†notes"])
    assert "".join(shown) == "See " and held == "【0:0†notes"


def test_citations_are_placed_where_their_markers_stood():
    first, second = REPLY.index("【0"), REPLY.index("【1")
    cited = [{"type": "file_citation", "text": "【1:2†bread.txt】", "start_index": second,
              "end_index": second + len("【1:2†bread.txt】")},
             {"type": "file_citation", "text": "【0:0†chess.txt】", "start_index": first,
              "end_index": first + len("【0:0†chess.txt】")}]
    text, placed = unmarked(REPLY, cited)
    assert text == SHOWN
    assert [(index, citation["text"]) for index, citation in placed] == [
        (SHOWN.index(";"), "【0:0†chess.txt】"), (SHOWN.index("."), "【1:2†bread.txt】")]


def test_a_marker_nothing_cites_goes_and_an_annotation_over_other_text_is_kept():
    value = "Tides follow the moon [source] 【9:9†none】."
    start = value.index("[source]")
    cited = [{"type": "file_citation", "text": "[source]", "start_index": start,
              "end_index": start + len("[source]")}]
    text, placed = unmarked(value, cited)
    assert text == "Tides follow the moon  ."
    assert [index for index, _ in placed] == [len("Tides follow the moon ")]


def test_an_annotation_whose_range_does_not_hold_its_text_is_not_placed():
    value = "Plain text."
    text, placed = unmarked(value, [{"type": "file_citation", "text": "【0:0†a】",
                                     "start_index": 3, "end_index": 9}])
    assert (text, placed) == (value, [])
