"""A stand-in for llama-server's native API, for fast tests of the server backend.

It speaks /health, /props, /v1/models, /tokenize, /detokenize and /completion with the
field names of the vendored llama.cpp, tokenizes by words, and answers each
/completion in the shape the grammar asks for (the text depends on the seed,
so a replay can be compared). Tests queue failures for the next requests
(`fail`): an HTTP status, a body outside the API, a dropped connection, an
answer cut off mid-body, a token id outside the vocabulary, an answer that never
comes; or stop it (connection refused) and start it again on
the same port. It records every request it got.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.scripted import scripted_reply

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = {"<|im_start|>": 1, "<|im_end|>": 2, "<s>": 3}
BOS = 3
N_VOCAB = 30100  # word ids are 100 + crc32 % 30000
# the request fields llama-server echoes in generation_settings that the backend checks
ECHOED = ("seed", "n_predict", "samplers", "repeat_last_n", "top_k", "mirostat", "temperature",
          "top_p", "min_p", "typical_p", "repeat_penalty")  # fmt: skip


def words(text: str, parse_special: bool) -> list[int]:
    """Word-level token ids; control-token text is one id only with parse_special."""
    out = []
    pattern = "(" + "|".join(re.escape(s) for s in SPECIAL) + ")" if parse_special else "$^"
    for part in re.split(pattern, text):
        if parse_special and part in SPECIAL:
            out.append(SPECIAL[part])
            continue
        out += [100 + zlib.crc32(w.encode()) % 30000 for w in part.split()]
    return out


def reply_for(body: dict[str, Any]) -> str:
    return scripted_reply(body["grammar"], f"yes, seed {body['seed'] % 97} says so")


class FakeLlamaServer:
    """One fake llama-server on 127.0.0.1 (a free port, kept across restarts)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        build: str = "b1-fake",
        model_path: str = "/models/fake-7b.Q4_K_M.gguf",
        n_ctx: int = 4096,
        slots: int = 1,
        template: str = TEMPLATE,
    ) -> None:
        self.api_key = api_key
        self.build = build
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.slots = slots
        self.template = template
        self.variant = ""  # appended to answers: another build that answers differently
        self.fail: list[str] = []  # what the next /completion requests do instead
        self.on_completion: list[Any] = []  # callbacks(server) run at each /completion
        self.calls: Counter[str] = Counter()
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.completions: list[dict[str, Any]] = []
        self.tokenized: list[tuple[str, bool]] = []
        self.generating = 0  # /completion requests being answered now
        self.most_generating = 0  # the most at once
        self._counting = threading.Lock()
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._release = threading.Event()  # ends a hanging answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLlamaServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: object) -> None:
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                if server.api_key is None or self.path == "/health":
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                error = {"message": "Invalid API Key", "type": "authentication_error"}
                self._send(401, {"error": {"code": 401, **error}})
                return False

            def do_GET(self) -> None:  # noqa: N802
                server.calls[self.path] += 1
                server.authorizations.append(self.headers.get("Authorization"))
                if not self._authorized():
                    return
                if self.path == "/health":
                    self._send(200, {"status": "ok"})
                elif self.path == "/props":
                    self._send(200, server.props())
                elif self.path == "/v1/models":
                    meta = {"vocab_type": 2, "n_vocab": N_VOCAB, "n_ctx_train": server.n_ctx}
                    entry = {"id": server.model_path, "object": "model", "meta": meta}
                    self._send(200, {"object": "list", "data": [entry]})
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found"}})

            def do_POST(self) -> None:  # noqa: N802
                server.calls[self.path] += 1
                server.authorizations.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._authorized():
                    return
                if self.path == "/tokenize":
                    server.tokenized.append((body["content"], body["parse_special"]))
                    tokens = words(body["content"], body["parse_special"])
                    if body.get("add_special"):
                        tokens = [BOS, *tokens]
                    self._send(200, {"tokens": tokens})
                elif self.path == "/detokenize":
                    self._send(200, {"content": " ".join(map(str, body["tokens"]))})
                elif self.path == "/completion":
                    with server._counting:
                        server.completions.append(body)
                        server.generating += 1
                        server.most_generating = max(server.most_generating, server.generating)
                    try:
                        for callback in list(server.on_completion):
                            callback(server)
                        self._complete(body)
                    finally:
                        with server._counting:
                            server.generating -= 1
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found"}})

            def _complete(self, body: dict[str, Any]) -> None:
                mode = server.fail.pop(0) if server.fail else ""
                if mode in ("drop", "die"):  # the connection closes with no answer
                    if mode == "die":  # ... and the server is gone
                        server.stop()
                    self.close_connection = True
                    return
                if mode == "hang":
                    server._release.wait(60)
                    return
                if mode.isdigit():
                    self._send(int(mode), {"error": {"code": int(mode), "message": "boom"}})
                    return
                if mode == "garbage":
                    self._send(200, {"content": 42, "tokens": "none"})
                    return
                if mode == "cut":  # a Content-Length, half the body, then the end
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"content": "yes')
                    self.wfile.flush()
                    self.close_connection = True
                    return
                text = reply_for(body) + server.variant
                tokens = words(text, False) + [2]
                if mode == "bad-token":  # an id past the end of the vocabulary
                    tokens = [N_VOCAB + 5, *tokens]
                settings = {k: body[k] for k in ECHOED}
                if mode == "ignore-seed":
                    settings["seed"] = 4294967295
                if body.get("stream"):
                    self._stream(text, tokens, body, settings, cut=mode == "stream-cut")
                    return
                self._send(
                    200,
                    {
                        "content": text,
                        "tokens": tokens,
                        "stop_type": "eos",
                        "stopping_word": "",
                        "tokens_predicted": len(tokens),
                        "tokens_evaluated": len(body["prompt"]),
                        "truncated": False,
                        "timings": {
                            "prompt_n": len(body["prompt"]),
                            "prompt_ms": 1.0,
                            "predicted_n": len(tokens),
                            "predicted_ms": 2.0,
                        },
                        "generation_settings": settings,
                    },
                )

            def _stream(
                self,
                text: str,
                tokens: list[int],
                body: dict[str, Any],
                settings: dict[str, Any],
                cut: bool,
            ) -> None:
                """As llama-server streams: a piece and its token per event, then one
                event with no text and everything else (cut: the stream ends before)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                pieces = [w + " " for w in text.split(" ")]
                pieces[-1] = pieces[-1][:-1]
                ids = [*tokens[: len(pieces) - 1], tokens[len(pieces) - 1 :]]
                for piece, token in zip(pieces, ids, strict=True):
                    batch = token if isinstance(token, list) else [token]
                    event = {"content": piece, "tokens": batch, "stop": False}
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                if cut:
                    self.close_connection = True
                    return
                final = {
                    "content": "", "tokens": [], "stop": True, "stop_type": "eos",
                    "stopping_word": "", "tokens_predicted": len(tokens),
                    "tokens_evaluated": len(body["prompt"]), "truncated": False,
                    "timings": {"prompt_n": len(body["prompt"]), "prompt_ms": 1.0,
                                "predicted_n": len(tokens), "predicted_ms": 2.0},
                    "generation_settings": settings,
                }  # fmt: skip
                self.wfile.write(b"data: " + json.dumps(final).encode() + b"\n\n")
                self.close_connection = True

        self._release.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        serve = self._httpd.serve_forever
        threading.Thread(target=serve, args=(0.02,), daemon=True).start()  # stops fast
        return self

    def props(self) -> dict[str, Any]:
        return {
            "default_generation_settings": {"params": {}, "n_ctx": self.n_ctx},
            "total_slots": self.slots,
            "model_alias": self.model_path.rsplit("/", 1)[-1],
            "model_path": self.model_path,
            "chat_template": self.template,
            "bos_token": "<s>",
            "eos_token": "<|im_end|>",
            "build_info": self.build,
        }

    def stop(self) -> None:
        """Close the port: the next requests are refused."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
