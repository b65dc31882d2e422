"""Keep control-token text in a conversation plain text, on servers that read it as markup.

An OpenAI-compatible server renders the conversation with its chat template and
tokenizes the result with control tokens on: `<|im_end|>` typed into a question or
written by a panelist would end the message for the model (llama-server,
tools/server/server-common.cpp, tokenizes chat prompts with parse_special; vLLM,
SGLang, Ollama and LM Studio do the same with their tokenizers). localtable never
sends such text as it is: every piece of text in the forms control tokens take
(`<|...|>`, `<s>`, `[INST]`, `<start_of_turn>`, ...) gets a WORD JOINER (U+2060)
after its first character, which no tokenizer reads as the control token and a
model reads past, and the generation's notes say so. Where the server can tell
(llama-server's /tokenize, with and without parse_special), what is sent is
checked to hold no control token at all.
"""

from __future__ import annotations

import re

from localtable.backends.base import ChatMessage

JOINER = "\u2060"
# the shapes of control tokens in the chat templates of common models: ChatML and
# Llama 3 (<|im_end|>, <|eot_id|>), DeepSeek (<｜end▁of▁sentence｜>), Llama 2 and
# Mistral ([INST], <<SYS>>, [TOOL_CALLS]), Gemma (<start_of_turn>), SentencePiece
# (<s>, </s>, <unk>), Qwen 3's <think>
MARKUP = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"
    r"|<｜[^<>｜]{1,64}｜>"
    r"|</?(?:s|unk|pad|bos|eos|mask|think|start_of_turn|end_of_turn|start_of_image|end_of_image)>"
    r"|<</?SYS>>"
    r"|\[/?[A-Z][A-Z_]{2,31}\]"
)


def plain(text: str) -> tuple[str, list[str]]:
    """The text with every control-token shape broken, and the shapes it held."""
    found: list[str] = []

    def breaks(match: re.Match[str]) -> str:
        token = match.group(0)
        if token not in found:
            found.append(token)
        return token[0] + JOINER + token[1:]

    return MARKUP.sub(breaks, text), found


def plain_messages(
    messages: list[ChatMessage], prefill: str
) -> tuple[list[dict[str, str]], list[str]]:
    """The conversation as the chat API takes it (the reply's start as the last,
    assistant message), control-token text broken, and the notes that say what was."""
    sent: list[dict[str, str]] = []
    shapes: list[str] = []
    wire = [(m.role, m.content) for m in messages]
    if prefill:
        wire.append(("assistant", prefill))
    for role, content in wire:
        text, found = plain(content)
        shapes += [s for s in found if s not in shapes]
        sent.append({"role": role, "content": text})
    notes = [
        f"control-token text sent with U+2060 after its first character: {', '.join(shapes)}"
    ] if shapes else []  # fmt: skip
    return sent, notes
