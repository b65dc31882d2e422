"""A JSON answer read as it streams, written as the turn's lines (form.py).

The server sends `{"Reasoning": "The ...", "Answer": "Yes, ..."}` a few characters
at a time; people watching a turn see `Reasoning: The ...` grow instead, and a
generation that max_tokens cut off mid-object still gives the lines it got so far
(the protocol keeps its whole fields and continues after them). Only a flat object
of string values, as form.py's schemas ask for, is read; anything else stops the
reading (`broken`), and the whole answer is then checked by Form.text.
"""

from __future__ import annotations

_WHITESPACE = " \t\r\n"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsonLines:
    """Feed the answer's pieces in order; each feed returns the new text."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels  # property -> the start of its line ("Reasoning: ", or "")
        self.text = ""  # everything written so far
        self.broken = False
        self._state = "start"
        self._fields = 0
        self._key = ""
        self._escape = ""  # an escape being read (\u and its hex digits)
        self._high = 0  # a UTF-16 high surrogate waiting for its pair

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for c in piece:
            if self.broken:
                break
            self._step(c, out)
        new = "".join(out)
        self.text += new
        return new

    def _step(self, c: str, out: list[str]) -> None:
        state = self._state
        if state in ("key", "value"):
            self._in_string(c, out)
        elif c in _WHITESPACE:
            return
        elif state == "start" and c == "{":
            self._state = "key-or-end"
        elif state in ("key-or-end", "key-next") and c == '"':
            self._state, self._key = "key", ""
        elif state in ("key-or-end", "after-value") and c == "}":
            self._state = "done"
        elif state == "colon" and c == ":":
            self._state = "value-start"
        elif state == "value-start" and c == '"':
            self._state = "value"
            label = self.labels.get(self._key, f"{self._key}: ")
            out.append(("\n" if self._fields else "") + label)
            self._fields += 1
        elif state == "after-value" and c == ",":
            self._state = "key-next"
        else:
            self.broken = True

    def _in_string(self, c: str, out: list[str]) -> None:
        char = self._char(c)
        if char is None:
            return
        if char == "":  # the closing quote
            self._state = "colon" if self._state == "key" else "after-value"
        elif self._state == "key":
            self._key += char
        else:
            out.append(char)

    def _char(self, c: str) -> str | None:
        """The character a string's next input character completes: None while an
        escape is incomplete, "" for the closing quote."""
        if self._escape:
            self._escape += c
            if self._escape.startswith("\\u") and len(self._escape) < 6:
                return None
            if self._escape.startswith("\\u"):
                code = int(self._escape[2:], 16) if _hex(self._escape[2:]) else -1
                self._escape = ""
                return self._code(code)
            self._escape = ""
            if c not in _ESCAPES:
                self.broken = True
                return None
            return _ESCAPES[c]
        if c == "\\":
            self._escape = "\\"
            return None
        if c == '"':
            return ""
        return c

    def _code(self, code: int) -> str | None:
        if code < 0:
            self.broken = True
            return None
        if 0xD800 <= code < 0xDC00:
            self._high = code
            return None
        if 0xDC00 <= code < 0xE000 and self._high:
            high, self._high = self._high, 0
            return chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))
        return chr(code)


def _hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
