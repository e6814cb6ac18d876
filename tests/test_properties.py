"""djl.properties follows java.util.Properties.load (spec §4.6, §8.2)."""

from __future__ import annotations

import pytest

from djl.properties import parse_properties, read_properties


def lines(*physical: str) -> str:
    return "\n".join(physical)


# -- comments and blank lines ----------------------------------------------------------------


def test_comments_and_blank_lines_are_skipped() -> None:
    text = lines("# hash comment", "! bang comment", "   # indented", "", "  \t ", "a=1")
    assert parse_properties(text) == {"a": "1"}


def test_comment_marker_inside_a_value_is_kept() -> None:
    assert parse_properties("a=1 # not a comment") == {"a": "1 # not a comment"}


def test_a_comment_ending_in_backslash_does_not_continue() -> None:
    assert parse_properties(lines("# comment \\", "a=1")) == {"a": "1"}


# -- separators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "key=value",
        "key:value",
        "key value",
        "key = value",
        "key : value",
        "key\tvalue",
        "key   value",
        "  key=value",
        "key \t = \t value",
        "\fkey\f=\fvalue",
    ],
)
def test_separators(line: str) -> None:
    assert parse_properties(line) == {"key": "value"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a==b", {"a": "=b"}),  # only the first '=' separates
        ("a:=b", {"a": "=b"}),
        ("a =:b", {"a": ":b"}),  # whitespace, then at most one '=' or ':'
        ("a = = b", {"a": "= b"}),
        ("a b c", {"a": "b c"}),
        ("a", {"a": ""}),
        ("a=", {"a": ""}),
        ("a   ", {"a": ""}),
        ("=v", {"": "v"}),
        ("a=b  ", {"a": "b  "}),  # trailing whitespace belongs to the value
    ],
)
def test_separator_edge_cases(line: str, expected: dict[str, str]) -> None:
    assert parse_properties(line) == expected


# -- escapes ---------------------------------------------------------------------------------


def test_escaped_separators_in_keys() -> None:
    text = lines(r"a\=b=c", r"x\:y:z", r"sp\ ace = v", r"tab\	key v", r"h\#sh=1")
    assert parse_properties(text) == {
        "a=b": "c",
        "x:y": "z",
        "sp ace": "v",
        "tab\tkey": "v",
        "h#sh": "1",
    }


def test_escaped_backslashes_before_a_separator() -> None:
    # Two backslashes are one literal backslash, so the '=' after them separates.
    assert parse_properties(r"a\\=b") == {"a\\": "b"}


def test_character_escapes() -> None:
    assert parse_properties(r"k=\t\n\r\f|\q\\|\=\:\ ") == {"k": "\t\n\r\f|q\\|=: "}


def test_unicode_escapes() -> None:
    assert parse_properties(r"caf\u00e9=\u0041\u00DF\u4e2d") == {"café": "Aß中"}


def test_unicode_surrogate_pair_becomes_one_character() -> None:
    assert parse_properties(r"k=\uD83D\uDE00") == {"k": "\U0001f600"}


@pytest.mark.parametrize("line", [r"k=\u12", r"k=\u0x1f", r"k=\u 123", r"k=\uZZZZ", r"k=\u+0a1"])
def test_malformed_unicode_escape_is_an_error(line: str) -> None:
    with pytest.raises(ValueError, match="Malformed"):
        parse_properties(line)


# -- continuation lines ----------------------------------------------------------------------


def test_continuation_drops_leading_whitespace_of_next_line() -> None:
    text = lines("list=a, \\", "     b, \\", "\t\tc", "next=1")
    assert parse_properties(text) == {"list": "a, b, c", "next": "1"}


def test_continuation_line_starting_with_hash_is_not_a_comment() -> None:
    assert parse_properties(lines("a=b\\", "  #c")) == {"a": "b#c"}


def test_continuation_can_split_a_key() -> None:
    assert parse_properties(lines("ke\\", "  y=v")) == {"key": "v"}


@pytest.mark.parametrize(
    ("backslashes", "expected"),
    [
        (1, {"a": "xc=d"}),  # odd: continuation
        (2, {"a": "x\\", "c": "d"}),  # even: an escaped backslash, not a continuation
        (3, {"a": "x\\c=d"}),
        (4, {"a": "x\\\\", "c": "d"}),
    ],
)
def test_trailing_backslash_parity(backslashes: int, expected: dict[str, str]) -> None:
    assert parse_properties(lines("a=x" + "\\" * backslashes, "c=d")) == expected


def test_whitespace_only_continuation_line_ends_the_value() -> None:
    assert parse_properties(lines("a=b\\", "   ", "c=d")) == {"a": "b", "c": "d"}


def test_continuation_at_end_of_input() -> None:
    assert parse_properties("a=b\\") == {"a": "b"}
    assert parse_properties("a=b\\\n") == {"a": "b"}


# -- line endings, duplicates, files ---------------------------------------------------------


def test_line_endings() -> None:
    assert parse_properties("a=1\r\nb=2\rc=3\nd=4\\\r\n  5") == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "45",
    }


def test_form_feed_and_vertical_tab_do_not_end_a_line() -> None:
    assert parse_properties("a=x\fy\x0bz\u2028w") == {"a": "x\fy\x0bz\u2028w"}


def test_later_keys_win_and_order_is_kept() -> None:
    result = parse_properties(lines("b=1", "a=2", "b=3"))
    assert result == {"b": "3", "a": "2"}
    assert list(result) == ["b", "a"]


def test_read_properties_utf8_and_latin1(tmp_path) -> None:
    utf8 = tmp_path / "utf8.properties"
    utf8.write_bytes("name=café\n".encode())
    latin1 = tmp_path / "latin1.properties"
    latin1.write_bytes("name=caf\xe9\n".encode("latin-1"))
    assert read_properties(utf8) == {"name": "café"}
    assert read_properties(latin1) == {"name": "café"}


def test_serving_properties_example() -> None:
    text = lines(
        "# identity model",
        "engine=Python",
        "option.entryPoint = model.py",
        "cpu.minWorkers:2",
        "cpu.maxWorkers 4",
        "option.env=A=1,\\",
        "    B=2",
    )
    assert parse_properties(text) == {
        "engine": "Python",
        "option.entryPoint": "model.py",
        "cpu.minWorkers": "2",
        "cpu.maxWorkers": "4",
        "option.env": "A=1,B=2",
    }
