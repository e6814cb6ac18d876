"""Incremental detokenisation: each new token's text is what it adds to the decoded whole.

Decoding a token alone is wrong for byte-level and SentencePiece vocabularies (a space, or
half of a UTF-8 character, lives in a neighbour), so the text of token *n* is
``decode(window + n)`` minus ``decode(window)``, over a short window of the tokens before
it; a piece that ends in an incomplete character (U+FFFD) is held back until the next
token completes it. The same scheme as text-generation-inference's ``decode_token``.
"""

from __future__ import annotations

from typing import Any

#: Prompt tokens kept as the first window, so the first generated token's leading space
#: decodes as it would in context.
_CONTEXT = 5


class Detokenizer:
    __slots__ = ("ids", "prefix", "read", "tokenizer")

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-_CONTEXT:])
        #: ids[prefix:read] is the window already emitted; ids[read:] is held back.
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        """The text ``token`` adds (maybe empty, until a character completes)."""
        self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""
