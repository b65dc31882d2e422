"""A stand-in for OpenAI-compatible servers, for fast tests of the openai backend.

One class speaks three dialects (`dialect`): llama-server's /v1 (its /props,
/tokenize and token count beside /v1/models, and the parameters it applied echoed
back under `__verbose`), Ollama (/api/version, /api/tags and its own /api/chat
with `format` and `options`), and a plain OpenAI-compatible server (vLLM's
`owned_by`). Each answer is read off the JSON schema the request carries: the
first object of an `anyOf`, each enum's first value, and for a pattern the first
of a few sentences that matches it (the sentences name the seed, so a replay can be
compared). Tests queue failures for the next chat requests (`fail`): an HTTP status
("429:0" with its Retry-After), a dropped connection, a server that dies, an answer
that never comes, a stream cut short, a body that does not match the schema, a
server that ignores the seed, one that stops or changes its key after answering;
they can also stop it and start it again on the same port. It records every request
it got.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SPECIAL = ("<|im_start|>", "<|im_end|>")


def sentences(seed: int) -> list[str]:
    n = seed % 97
    return [
        f"Yes, seed {n} says so and that is that.",
        f"No, seed {n} says otherwise for good reason.",
        f"Seed {n} says so, one view.",
        str(n),
    ]


def value_for(schema: dict[str, Any], seed: int) -> str:
    if "enum" in schema:
        return str(schema["enum"][0])
    body = str(schema.get("pattern", "^.*$"))[1:-1]
    for sentence in sentences(seed):
        if re.fullmatch(body, sentence):
            return sentence
    return "nothing fits"


def answer_for(schema: dict[str, Any], seed: int) -> dict[str, str]:
    obj = schema["anyOf"][0] if "anyOf" in schema else schema
    return {key: value_for(prop, seed) for key, prop in obj["properties"].items()}


def tokens(text: str, special: bool) -> list[int]:
    """Word-level token ids; control-token text is one id only with special."""
    out = []
    pattern = "(" + "|".join(re.escape(s) for s in SPECIAL) + ")" if special else "$^"
    for part in re.split(pattern, text):
        if special and part in SPECIAL:
            out.append(1 + SPECIAL.index(part))
            continue
        out += [100 + zlib.crc32(w.encode()) % 30000 for w in part.split()]
    return out


class FakeOpenAIServer:
    """One stand-in on 127.0.0.1 (a free port, kept across restarts)."""

    def __init__(
        self,
        *,
        dialect: str = "llama-server",
        model: str = "fake-7b",
        api_key: str | None = None,
        build: str = "b1-fake",
        n_ctx: int = 4096,
        slots: int = 1,
        fingerprint: str | None = "fp_fake",
    ) -> None:
        self.dialect = dialect
        self.model = model
        self.api_key = api_key
        self.build = build
        self.n_ctx = n_ctx
        self.slots = slots
        self.fingerprint = fingerprint
        self.variant = ""  # appended to answers: another build that answers differently
        self.fail: list[str] = []  # what the next chat requests do instead
        self.on_chat: list[Any] = []  # callbacks(server) run as each chat request arrives
        self.calls: Counter[str] = Counter()
        self.chats: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, body: dict[str, Any]) -> str:
        seed = int(body.get("seed", body.get("options", {}).get("seed", 0)))
        fmt = body.get("format") or body.get("response_format", {}).get("json_schema", {}).get(
            "schema"
        )
        if fmt is None:  # no structure asked: the lines the prompt asks for
            n = seed % 97
            if any('"Counterpoint:"' in m["content"] for m in body["messages"]):
                return f"Summary: seed {n} sums up.\nCounterpoint: none.\nAnswer: Seed {n} agrees."
            return f"Reasoning: seed {n} says so.\nAnswer: Seed {n} says so."
        whole = json.dumps(answer_for(fmt, seed + len(self.variant)), ensure_ascii=False)
        last = body["messages"][-1]
        if body.get("continue_final_message") and last["role"] == "assistant":
            # as llama-server: the reply's start primes the schema's grammar, and the
            # answer is what follows it
            return whole.removeprefix(last["content"])
        return whole

    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def _send(
                self, status: int, payload: object, headers: dict[str, str] | None = None
            ) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                server.authorizations.append(self.headers.get("Authorization"))
                if server.api_key is None or self.headers.get("Authorization") == (
                    f"Bearer {server.api_key}"
                ):
                    return True
                self._send(401, {"error": {"message": "Invalid API Key", "code": 401}})
                return False

            def _missing(self) -> None:
                self._send(404, {"error": {"message": "File Not Found", "code": 404}})

            def do_GET(self) -> None:  # noqa: N802
                server.calls[self.path] += 1
                if not self._authorized():
                    return
                d = server.dialect
                if self.path == "/v1/models":
                    owner = {"llama-server": "llamacpp", "ollama": "library"}.get(d, "vllm")
                    entry: dict[str, Any] = {
                        "id": server.model,
                        "object": "model",
                        "owned_by": owner,
                    }
                    if d == "vllm":
                        entry["max_model_len"] = server.n_ctx
                    self._send(200, {"object": "list", "data": [entry]})
                elif self.path == "/props" and d == "llama-server":
                    self._send(
                        200,
                        {
                            "build_info": server.build,
                            "model_path": f"/models/{server.model}.gguf",
                            "total_slots": server.slots,
                            "default_generation_settings": {"n_ctx": server.n_ctx},
                        },
                    )
                elif (self.path, d) in (("/version", "vllm"), ("/api/version", "ollama")):
                    self._send(200, {"version": server.build})
                elif self.path == "/api/tags" and d == "ollama":
                    digest = f"sha256:{zlib.crc32(server.model.encode()):08x}"
                    self._send(
                        200,
                        {
                            "models": [
                                {"name": server.model, "model": server.model, "digest": digest}
                            ]
                        },
                    )
                else:
                    self._missing()

            def do_POST(self) -> None:  # noqa: N802
                server.calls[self.path] += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._authorized():
                    return
                d = server.dialect
                if self.path == "/v1/chat/completions/input_tokens" and d == "llama-server":
                    text = " ".join(m["content"] for m in body["messages"])
                    self._send(200, {"input_tokens": len(tokens(text, True)) + 4})
                elif self.path == "/tokenize" and d == "llama-server":
                    self._send(200, {"tokens": tokens(body["content"], body["parse_special"])})
                elif self.path == "/tokenize" and d == "vllm":
                    text = body.get("prompt") or " ".join(m["content"] for m in body["messages"])
                    self._send(200, {"count": len(tokens(text, False)), "tokens": []})
                elif self.path == "/v1/chat/completions":
                    server.chats.append(body)
                    for callback in list(server.on_chat):
                        callback(server)
                    self._chat(body)
                elif self.path == "/api/chat" and d == "ollama":
                    server.chats.append(body)
                    self._ollama(body)
                else:
                    self._missing()

            def _failure(self) -> str:
                mode = server.fail.pop(0) if server.fail else ""
                if mode in ("drop", "die"):
                    if mode == "die":
                        server.stop()
                    self.close_connection = True
                    return "done"
                if mode == "hang":
                    server._release.wait(60)
                    return "done"
                if mode.startswith("429"):
                    _, _, after = mode.partition(":")
                    headers = {"Retry-After": after} if after else {}
                    self._send(429, {"error": {"message": "slow down"}}, headers)
                    return "done"
                if mode.isdigit():
                    self._send(int(mode), {"error": {"message": "boom", "code": int(mode)}})
                    return "done"
                return mode

            def _chat(self, body: dict[str, Any]) -> None:
                # a one-token probe (the backend asking for a fingerprint) fails nothing
                mode = self._failure() if body.get("max_tokens") != 1 else ""
                if mode == "done":
                    return
                content = server.reply(body)
                finish = "stop"
                if mode == "off-schema":
                    content = "I would rather not answer in JSON."
                elif mode == "cut":  # max_tokens ends it inside its last field
                    content, finish = content[: content.rindex('"') - 3], "length"
                verbose = None
                if server.dialect == "llama-server":
                    applied = {
                        k: body.get(k)
                        for k in (
                            "seed",
                            "samplers",
                            "repeat_last_n",
                            "top_k",
                            "mirostat",
                            "temperature",
                            "top_p",
                            "min_p",
                            "typical_p",
                            "repeat_penalty",
                        )
                    }
                    applied["n_predict"] = body.get("max_tokens")
                    applied["grammar"] = "root ::= ..." if "response_format" in body else ""
                    if mode == "ignore-seed":
                        applied["seed"] = 4294967295
                    verbose = {"generation_settings": applied}
                usage = {"prompt_tokens": 40, "completion_tokens": len(content.split())}
                # llama-server sends its build as the fingerprint
                fingerprint = (
                    server.build if server.dialect == "llama-server" else server.fingerprint
                )
                head = {"id": "x", "model": server.model, "system_fingerprint": fingerprint}
                if not body.get("stream"):
                    answer = {
                        **head,
                        "object": "chat.completion",
                        "usage": usage,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": finish,
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                    }
                    if verbose is not None:
                        answer["__verbose"] = verbose
                    if mode == "then-stop":  # the port closes; this answer still goes out
                        server.stop()
                    elif mode == "then-lock":  # its key changes after this answer
                        server.api_key = "changed"
                    self._send(200, answer)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                pieces = [content[i : i + 7] for i in range(0, len(content), 7)]
                for piece in pieces:
                    chunk = {
                        **head,
                        "choices": [
                            {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        ],
                    }
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                if mode == "stream-cut":
                    self.close_connection = True
                    return
                last: dict[str, Any] = {
                    **head,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                }
                if verbose is not None:
                    last["__verbose"] = verbose
                self.wfile.write(b"data: " + json.dumps(last).encode() + b"\n\n")
                usage_chunk = {**head, "choices": [], "usage": usage}
                self.wfile.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")

            def _ollama(self, body: dict[str, Any]) -> None:
                mode = self._failure()
                if mode == "done":
                    return
                content = server.reply(body)
                if mode == "off-schema":
                    content = '{"Answer": 42}'
                final = {
                    "model": server.model,
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": 40,
                    "eval_count": len(content.split()),
                    "prompt_eval_duration": 1_000_000,
                    "eval_duration": 2_000_000,
                    "message": {"role": "assistant", "content": ""},
                }
                if not body.get("stream"):
                    self._send(200, {**final, "message": {"role": "assistant", "content": content}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for i in range(0, len(content), 5):
                    chunk = {
                        "model": server.model,
                        "done": False,
                        "message": {"role": "assistant", "content": content[i : i + 5]},
                    }
                    self.wfile.write(json.dumps(chunk).encode() + b"\n")
                    self.wfile.flush()
                if mode != "stream-cut":
                    self.wfile.write(json.dumps(final).encode() + b"\n")

        self._release.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: the next requests are refused."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
