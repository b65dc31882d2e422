"""The tokens a grammar allows, found without checking the whole vocabulary.

llama.cpp's grammar reads a token's text character by character and rejects
the token as soon as no rule can take the next character. So in a given state
(no UTF-8 character left half-read by the previous token), when the token
whose whole text is p is rejected, so is every token whose text starts with p.
PrefixIndex sorts the vocabulary's texts, so that the tokens sharing a prefix
are a run, and checks the runs depth by depth: a run's "probe" (its token whose
text is the prefix itself) goes to the grammar, a rejected probe drops its
whole run, an accepted one lets the check go one character deeper. Runs with
no probe go deeper unchecked; small runs, and what is left at MAX_DEPTH, are
checked token by token. The answer is the very set a check of every token
gives (tests/test_grammar_topk_real.py compares the two at every step of real
generations on the demo models).

It is what GrammarTopK (grammar_topk.py) falls back on when the likely tokens
do not decide a step (typically a fixed literal the model did not expect):
on Gemma 3's 262k tokens it checks about a tenth of them.

Tokens whose text is not whole UTF-8, or is long, and end-of-generation tokens
(the grammar judges those by whether it can end) are always checked one by one.
Empty texts are never allowed and are left out.
"""

from __future__ import annotations

import ctypes
from typing import Any

MAX_DEPTH = 6
SMALL_RUN = 24  # a run this small is checked token by token, not probed
SMALL_REST = 1024  # once this few tokens are left undecided, check them one by one
MAX_PIECE = 256


def piece(vocab: Any, token: int, buf: Any) -> bytes | None:
    """The token's text as the grammar reads it (special tokens rendered); None if long."""
    import llama_cpp

    n = llama_cpp.llama_token_to_piece(vocab, token, buf, MAX_PIECE, 0, True)
    return bytes(buf.raw[:n]) if n >= 0 else None


class PrefixIndex:
    """A model's vocabulary sorted by text, with its prefix runs at each depth."""

    def __init__(self, vocab: Any) -> None:
        import llama_cpp
        import numpy as np

        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        buf = ctypes.create_string_buffer(MAX_PIECE)
        texts: list[tuple[str, int]] = []
        single: list[int] = []  # checked one by one, always
        seen: set[str] = set()
        for token in range(self.n_vocab):
            raw = piece(vocab, token, buf)
            if llama_cpp.llama_vocab_is_eog(vocab, token) or raw is None:
                single.append(token)
                continue
            if not raw or raw[0] == 0:
                continue  # the grammar never allows an empty text
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                single.append(token)  # part of a character: read with the pending bytes
                continue
            if "\x00" in text or text in seen:  # a second token with one text: no run of its own
                single.append(token)
                continue
            seen.add(text)
            texts.append((text, token))
        texts.sort()
        self.ids = np.array([t for _, t in texts], dtype=np.int32)
        self.single = np.array(single, dtype=np.int32)
        lens = np.array([len(s) for s, _ in texts], dtype=np.int32)
        heads = np.array([s[:MAX_DEPTH] for s, _ in texts], dtype=f"<U{MAX_DEPTH}")
        # per depth d: the runs of texts sharing their first d characters (texts shorter
        # than d belong to no run), each run's bounds and probe (-1: none)
        self.starts: list[Any] = []
        self.ends: list[Any] = []
        self.probes: list[Any] = []
        for d in range(1, MAX_DEPTH + 1):
            # texts are unique and sorted: a text shorter than d has a key of its own,
            # so a run is every text from a change of key to the next change
            key = heads.astype(f"<U{d}")
            change = np.ones(len(key), dtype=bool)
            change[1:] = key[1:] != key[:-1]
            boundaries = np.append(np.flatnonzero(change), len(key))
            starts = np.flatnonzero(change & (lens >= d))
            ends = boundaries[np.searchsorted(boundaries, starts, side="right")]
            self.starts.append(starts)
            self.ends.append(ends)
            self.probes.append(np.where(lens[starts] == d, self.ids[starts], -1))

    def allowed(self, check: Any) -> Any:
        """The token ids the grammar allows now; `check(ids)` returns the subset it allows."""
        import numpy as np

        found: list[Any] = [check(self.single)] if len(self.single) else []
        lo_alive, hi_alive = np.array([0]), np.array([len(self.ids)])
        for d in range(MAX_DEPTH):
            starts, ends, probes = self.starts[d], self.ends[d], self.probes[d]
            runs = spans(
                np.searchsorted(starts, lo_alive, side="left"),
                np.searchsorted(starts, hi_alive, side="left"),
            )
            lo, hi, probe = starts[runs], ends[runs], probes[runs]
            small = hi - lo <= SMALL_RUN
            probed = ~small & (probe >= 0)
            asked = probe[probed]
            found.append(check(np.concatenate([asked, self.ids[spans(lo[small], hi[small])]])))
            keep = ~small & (probe < 0)
            keep[np.flatnonzero(probed)[np.isin(asked, found[-1])]] = True
            # a kept run's probe is decided: go on from the text after it
            lo_alive, hi_alive = lo[keep] + (probe[keep] >= 0), hi[keep]
            if int(np.sum(hi_alive - lo_alive)) <= SMALL_REST or d == MAX_DEPTH - 1:
                found.append(check(self.ids[spans(lo_alive, hi_alive)]))
                break
        return np.concatenate(found)


def spans(lo: Any, hi: Any) -> Any:
    """The indices lo[0]..hi[0]-1, lo[1]..hi[1]-1, ... as one array."""
    import numpy as np

    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return shift + np.arange(total)
