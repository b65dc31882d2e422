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

The first character needs no probe per character: llama.cpp tests a character
only against the characters and ranges written in the grammar, so between two
consecutive code points the grammar writes (or ends a range at) every
character gets the same verdict, in every state (CharGroups). One single-
character token per such group decides every run whose text starts in it:
in a fixed literal, a few dozen checks instead of one per distinct first
character (19k on Gemma 3, 18k on Qwen 2.5). A grammar that names tokens
(<...>, !<...>) is judged by token id there, so it gets no groups.

It is what GrammarTopK (grammar_topk.py) falls back on when the likely tokens
do not decide a step (typically a fixed literal the model did not expect).

Tokens whose text is not whole UTF-8, or is long, and end-of-generation tokens
(the grammar judges those by whether it can end) are always checked one by one.
Empty texts are never allowed and are left out.

Building an index reads and sorts the whole vocabulary in Python: 2.5 s for
Gemma 3's 262k tokens, 1.7 s for Qwen 2.5's 152k, at a model's first grammar.
cached() keeps it on disk, keyed by the model file and the engine's version,
so that only the first debate with a model pays for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

MAX_DEPTH = 6
SMALL_RUN = 24  # a run this small is checked token by token, not probed
SMALL_REST = 1024  # once this few tokens are left undecided, check them one by one
MAX_PIECE = 256
FORMAT = 1  # of the cached index's arrays
KEPT_GROUPS = 64  # grammars whose CharGroups an index keeps


def piece(vocab: Any, token: int, buf: Any) -> bytes | None:
    """The token's text as the grammar reads it (special tokens rendered); None if long."""
    import llama_cpp

    n = llama_cpp.llama_token_to_piece(vocab, token, buf, MAX_PIECE, 0, True)
    return bytes(buf.raw[:n]) if n >= 0 else None


class PrefixIndex:
    """A model's vocabulary sorted by text, with its prefix runs at each depth."""

    def __init__(self, vocab: Any, arrays: dict[str, Any] | None = None) -> None:
        """Build the index from the vocabulary, or take it from `arrays` (to_arrays)."""
        import llama_cpp
        import numpy as np

        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._groups: dict[str, CharGroups | None] = {}
        self._groups_lock = threading.Lock()
        if arrays is not None:
            self._take(arrays)
            return
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
        # the first character of each depth-1 run (ascending: texts sort by code point)
        self.first = np.array([ord(texts[i][0][0]) for i in self.starts[0]], dtype=np.int64)

    def groups(self, grammar: str) -> CharGroups | None:
        """The grammar's CharGroups over this index (None: it names tokens, or does not
        parse), kept for the grammars seen last: a debate asks for the same few again."""
        with self._groups_lock:  # generations of one model may run at once
            if grammar not in self._groups:
                try:
                    bounds = char_bounds(grammar)
                except (ValueError, IndexError):
                    bounds = None
                if len(self._groups) >= KEPT_GROUPS:
                    self._groups.pop(next(iter(self._groups)))  # the oldest
                self._groups[grammar] = CharGroups(self, bounds) if bounds is not None else None
            return self._groups[grammar]

    def to_arrays(self) -> dict[str, Any]:
        import numpy as np

        arrays = {"format": np.array(FORMAT), "n_vocab": np.array(self.n_vocab)}
        arrays |= {"ids": self.ids, "single": self.single, "first": self.first}
        for d in range(MAX_DEPTH):
            arrays[f"starts{d}"] = self.starts[d].astype(np.int32)
            arrays[f"ends{d}"] = self.ends[d].astype(np.int32)
            arrays[f"probes{d}"] = self.probes[d].astype(np.int32)
        return arrays

    def _take(self, arrays: dict[str, Any]) -> None:
        """The index from to_arrays() output; ValueError if it is not one for this vocabulary."""
        import numpy as np

        if int(arrays["format"]) != FORMAT or int(arrays["n_vocab"]) != self.n_vocab:
            raise ValueError("a prefix index of another format or vocabulary")
        self.ids, self.single, self.first = arrays["ids"], arrays["single"], arrays["first"]
        self.starts = [arrays[f"starts{d}"].astype(np.int64) for d in range(MAX_DEPTH)]
        self.ends = [arrays[f"ends{d}"].astype(np.int64) for d in range(MAX_DEPTH)]
        self.probes = [arrays[f"probes{d}"] for d in range(MAX_DEPTH)]
        if len(self.ids) + len(self.single) > self.n_vocab or len(self.first) != len(
            self.starts[0]
        ):
            raise ValueError("an inconsistent prefix index")

    def allowed(self, check: Any, groups: CharGroups | None = None) -> Any:
        """The token ids the grammar allows now; `check(ids)` returns the subset it allows.
        groups: the grammar's CharGroups over this index (None: probe each first character)."""
        import numpy as np

        found: list[Any] = [check(self.single)] if len(self.single) else []
        lo_alive, hi_alive = np.array([0]), np.array([len(self.ids)])
        for d in range(MAX_DEPTH):
            starts, ends, probes = self.starts[d], self.ends[d], self.probes[d]
            runs = spans(
                np.searchsorted(starts, lo_alive, side="left"),
                np.searchsorted(starts, hi_alive, side="left"),
            )
            if d == 0 and groups is not None:
                runs = runs[groups.open(check)]
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


def cached(vocab: Any, model_path: Path, directory: Path) -> PrefixIndex:
    """The model's PrefixIndex from `directory` if one was kept there for this very file
    (its path, size and time of change) and engine version; else built and kept there.
    A cache that cannot be read is rebuilt; one that cannot be written is skipped."""
    import llama_cpp
    import numpy as np

    try:
        stat = model_path.stat()
    except OSError:  # the file went after loading: nothing to key a cache on
        return PrefixIndex(vocab)
    file_id = (model_path.resolve(), stat.st_size, stat.st_mtime_ns)
    key = "|".join(map(str, (FORMAT, llama_cpp.__version__, *file_id)))
    file = directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"
    unreadable = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
    with contextlib.suppress(*unreadable), np.load(file) as arrays:
        return PrefixIndex(vocab, dict(arrays))
    index = PrefixIndex(vocab)
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, **index.to_arrays())
            os.replace(tmp, file)  # whole or not at all, for a debate running beside
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return index


class CharGroups:
    """An index's depth-1 runs grouped by the first characters a grammar cannot tell
    apart (see the module doc), with one single-character token to ask per group."""

    def __init__(self, index: PrefixIndex, bounds: Any) -> None:
        import numpy as np

        self.group = np.searchsorted(bounds, index.first, side="right")  # per depth-1 run
        probes = index.probes[0]
        asked = np.flatnonzero(probes >= 0)
        groups, first = np.unique(self.group[asked], return_index=True)
        self.probe_groups = groups
        self.probe_ids = probes[asked[first]]  # one single-character token per group
        self.unprobed = ~np.isin(self.group, groups)  # runs of groups with no such token

    def open(self, check: Any) -> Any:
        """Which depth-1 runs can hold allowed tokens: those of the groups whose probe the
        grammar allows now, and those of groups with no probe (decided run by run)."""
        import numpy as np

        allowed = np.isin(self.probe_ids, check(self.probe_ids))
        return self.unprobed | np.isin(self.group, self.probe_groups[allowed])


ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def char_bounds(grammar: str) -> Any:
    """The code points where a character test of this GBNF grammar can change its verdict
    (each character it writes, and the one after it), sorted; None when the grammar
    names tokens, which llama.cpp judges by id. Follows llama-grammar.cpp's parser:
    literals "...", classes [...] (a range's ends are characters too), escapes, comments."""
    import numpy as np

    points: set[int] = set()
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c == "#":
            while i < n and grammar[i] not in "\r\n":
                i += 1
        elif c in "<!":
            return None  # a token element
        elif c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            if c == "[" and i < n and grammar[i] == "^":
                i += 1
            while i < n and grammar[i] != close:
                i, point = parse_char(grammar, i)
                points.add(point)
        i += 1
    bounds = sorted(points | {p + 1 for p in points})
    return np.array(bounds, dtype=np.int64)


def parse_char(grammar: str, i: int) -> tuple[int, int]:
    """The code point written at i (an escape or a character) and the index after it."""
    if grammar[i] != "\\":
        return i + 1, ord(grammar[i])
    kind = grammar[i + 1 : i + 2]
    if kind in HEX_DIGITS:
        digits = grammar[i + 2 : i + 2 + HEX_DIGITS[kind]]
        return i + 2 + len(digits), int(digits, 16)
    if kind in ESCAPES:
        return i + 2, ord(ESCAPES[kind])
    raise ValueError(f"unknown escape in grammar at {i}")


def spans(lo: Any, hi: Any) -> Any:
    """The indices lo[0]..hi[0]-1, lo[1]..hi[1]-1, ... as one array."""
    import numpy as np

    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return shift + np.arange(total)
