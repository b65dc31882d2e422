"""GrammarTopK on real llama.cpp: the same arrays as grammar + top_k, the same text.

localtable/backends/llamacpp/grammar_topk.py replaces llama-cpp-python's grammar and top_k
samplers with one step that checks the likely tokens first. These tests
compare it with the two samplers it replaces: array for array on random
logits (with ties and fixed literals, where it must fall back), and text for
text on whole generations of both tiny models.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from localtable.backends.llamacpp import grammar_topk
from localtable.config import load_config
from localtable.models.files import resolve
from localtable.templates import TemplateSet
from tests.conftest import MODELS_TOML
from tests.realmodels import smollm2_path

pytestmark = pytest.mark.slow

FREE_TEXT = r'root ::= "Answer: " [^\x00-\x1f]*'
ANY_TEXT = r"root ::= [^\x00-\x1f]+"
LITERAL_FIRST = (
    r'root ::= "Decision: " ("maintained" | "changed") "\nAnswer: " [^\x00-\x20<] [^\x00-\x1f]*'
)
# a later-round turn of an open question, as the protocol renders it
TURN = TemplateSet().render(
    "turn.gbnf.j2",
    fields=["reasoning", "influenced_by", "decision", "position", "answer"],
    peers=["Gemma 3 270M", "SmolLM2 Skeptic"],
    letters=["A", "B"],
    stances={"A": "yes", "B": "no"},  # the Position line goes on into an answer of its stance
    allow_new=True,
    own_position="",
    reasoning_max=500,
    multiline=False,
    answer_max=200,
    kind="open",
    options=[],
)


def vocab_only(path: str) -> Any:
    import llama_cpp
    from llama_cpp import _internals as internals

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    return internals.LlamaModel(path_model=path, params=params, verbose=False)


def token_array(logits: Any) -> tuple[Any, Any]:
    import llama_cpp
    import numpy as np

    n = len(logits)
    data = (llama_cpp.llama_token_data * n)()
    view = np.ctypeslib.as_array(data)
    view["id"] = np.arange(n)
    view["logit"] = logits
    view["p"] = 0.0
    arr = llama_cpp.llama_token_data_array(
        data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=n, selected=-1, sorted=False
    )
    return arr, data


def kept(arr: Any) -> list[tuple[int, float]]:
    return [(int(arr.data[i].id), float(arr.data[i].logit)) for i in range(arr.size)]


# (grammar, text already written, penalties: last_n, repeat, frequency, presence)
ARRAY_CASES = [
    (ANY_TEXT, "", None),
    (LITERAL_FIRST, "", None),
    (ANY_TEXT, "the cat saw the cat and the dog", (64, 1.1, 0.0, 0.0)),
    (LITERAL_FIRST, "Decision: changed\nAnswer: no no and no", (4, 1.3, 0.5, 0.25)),
]


@pytest.mark.parametrize("grammar,written,penalties", ARRAY_CASES)
def test_same_array_as_penalties_grammar_then_top_k(
    grammar: str, written: str, penalties: tuple[int, float, float, float] | None
) -> None:
    import llama_cpp
    import numpy as np

    model = vocab_only(str(smollm2_path()))
    n = llama_cpp.llama_vocab_n_tokens(model.vocab)
    literal_start = model.tokenize(b"Decision", add_bos=False, special=False)[0]
    history = model.tokenize(written.encode(), add_bos=False, special=False) if written else []
    rng = np.random.default_rng(7)
    decided = {"fast": 0, "full": 0}
    for trial in range(40):
        logits = rng.normal(0, 3, n).astype(np.float32)
        if trial % 4 == 1:  # ties among the best tokens
            best = np.argsort(-logits)[:60]
            logits[best[::2]] = logits[best[1::2]]
        if trial % 4 == 2:  # peaked: an allowed token stands far above the rest
            logits[literal_start] += 40
        if trial % 4 == 3:  # the tokens just written are the likely ones: penalties matter
            logits[history] = rng.normal(8, 3, len(history)).astype(np.float32)
        # penalties, grammar, then top_k: what llama-cpp-python's chain does
        chain = [llama_cpp.llama_sampler_init_penalties(n, *penalties)] if penalties else []
        chain.append(llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root"))
        chain.append(llama_cpp.llama_sampler_init_top_k(40))
        step = grammar_topk.GrammarTopK(
            model.vocab, grammar, "root", 40, grammar_topk.TAIL_GAP,
            penalties=(n, *penalties) if penalties else None,
        )  # fmt: skip
        for token in history:
            for sampler in chain:
                llama_cpp.llama_sampler_accept(sampler, token)
            step._accept(None, token)
        arr, _keep = token_array(logits)
        for sampler in chain:
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
        expected = kept(arr)
        # GrammarTopK
        arr2, _keep2 = token_array(logits)
        step._apply(None, ctypes.pointer(arr2))
        got = kept(arr2)
        if step.fast:
            decided["fast"] += 1
            assert arr2.sorted
            if len(got) == 40:
                assert got == expected
            else:  # few allowed: top_k's array, less entries too small to count
                assert got == expected[: len(got)]
                floor = got[0][1] - grammar_topk.TAIL_GAP
                assert all(logit < floor for _, logit in expected[len(got) :])
        else:
            decided["full"] += 1
            assert got == expected
        for s in (*chain, step.sampler):
            llama_cpp.llama_sampler_free(s)
    assert decided["fast"] > 0 and decided["full"] > 0  # both paths were exercised
    model.close()


def load(model: str) -> Any:
    import llama_cpp

    path = resolve(model, load_config(MODELS_TOML)).path
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2,
        n_threads_batch=2, flash_attn=False, verbose=False,
    )  # fmt: skip


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_same_text_as_llama_cpp_python(model: str) -> None:
    import llama_cpp

    llm = load(model)
    prompt = (
        "A roundtable debate. Question: Should cities ban cars from their centres?\n"
        "Earlier, you answered: Yes, mostly.\nNow reply in the required format.\n"
    )
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    # (seed, temperature, repeat, frequency and presence penalties)
    cases = ((1, 0.7, 1.1, 0.0, 0.0), (2, 0.9, 1.0, 0.4, 0.2), (3, 1.3, 1.0, 0.0, 0.0))
    for grammar in (TURN, FREE_TEXT):
        for seed, temperature, repeat, frequency, presence in cases:
            texts = []
            for fast in (True, False):
                if fast:
                    grammar_topk.install(llm)
                else:
                    llm.__dict__.pop("_init_sampler", None)
                llm.reset()
                out: Any = llm.create_completion(
                    prompt=tokens, max_tokens=48, temperature=temperature, top_p=0.9, top_k=40,
                    min_p=0.05, repeat_penalty=repeat, frequency_penalty=frequency,
                    presence_penalty=presence, seed=seed,
                    grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False),  # type: ignore[attr-defined]
                )  # fmt: skip
                texts.append(out["choices"][0]["text"])
                if fast:
                    fast_steps, _ = grammar_topk.steps(llm)
                    assert fast_steps > 0
                llm._sampler = None
            assert texts[0] == texts[1], (model, seed, temperature)
    llm.close()


def test_the_tail_shortcut_needs_top_p_or_min_p_to_drop_the_tail() -> None:
    """With top_p = 1 and min_p = 0 a far-below token would reach dist: no shortcut."""
    import llama_cpp

    llm = load("smollm2-135m")
    grammar_topk.install(llm)
    grammar = llama_cpp.LlamaGrammar.from_string(FREE_TEXT, verbose=False)  # type: ignore[attr-defined]
    gaps = {}
    for top_p, min_p in ((1.0, 0.0), (0.9, 0.0), (1.0, 0.05)):
        sampler = llm._init_sampler(grammar=grammar, temp=0.7, top_k=40, top_p=top_p, min_p=min_p)
        gaps[top_p, min_p] = sampler.localtable_grammar_topk.tail_gap
    assert gaps == {(1.0, 0.0): float("inf"), (0.9, 0.0): 20.0, (1.0, 0.05): 20.0}
    llm.close()


# a round-2 turn as a model would write it: literals, letters, free text, non-ASCII
TURN_REPLY = (
    "Reasoning: Cars crowd the centre; buses, bikes and trams move more people — "
    "though deliveries need access, a ban with exceptions works. Café owners agree.\n"
    "Influenced by: Gemma 3 270M, SmolLM2 Skeptic\nDecision: maintained\nPosition: A\n"
    "Answer: Yes, with exceptions"
)


SUMMARY = TemplateSet().render("summary.gbnf.j2", line_max=200, summary_max=600)
SUMMARY_REPLY = (
    "Summary: Most held that cars should leave the centre — some said only at rush hour.\n"
    "Counterpoint: Deliveries and disabled drivers need access.\nAnswer: Yes, with exceptions."
)
NUMBER_TURN = TemplateSet().render(
    "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=None, allow_new=False,
    own_position="", reasoning_max=500, multiline=True, answer_max=200, kind="number",
    options=[],
)  # fmt: skip
NUMBER_REPLY = "Reasoning: 12 × 3 = 36\n36 − 0.5 = 35.5\nAnswer: 35.5"
# escapes, ranges, any character, non-ASCII literals, a comment with quotes and brackets
ODD = (
    '# a comment with "quotes", [brackets] and <angles>\n'
    'root ::= "Größe: " [a-zA-Zß-ü\\u00e9]+ " \\u2014 " ("ja" | "nein") "\\n" '
    '. [\\x41-\\x5a]* "\\x21"?\n'
)
ODD_REPLY = "Größe: Straßeé — ja\nxABC!"
REPLIES = [
    (TURN, TURN_REPLY), (SUMMARY, SUMMARY_REPLY), (NUMBER_TURN, NUMBER_REPLY), (ODD, ODD_REPLY),
]  # fmt: skip


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
def test_probing_finds_exactly_the_tokens_a_whole_check_allows(model: str) -> None:
    """At every step of a reply, in every grammar state it passes through, with the
    grammar's character groups and without: PrefixIndex.allowed() == the grammar
    applied to the whole vocabulary."""
    import llama_cpp
    import numpy as np

    vocab_model = vocab_only(str(resolve(model, load_config(MODELS_TOML)).path))
    vocab = vocab_model.vocab
    index = grammar_topk.grammar_probe.PrefixIndex(vocab)
    n = index.n_vocab
    for grammar, reply in REPLIES:
        step = grammar_topk.GrammarTopK(
            vocab, grammar, "root", 40, grammar_topk.TAIL_GAP, index=index
        )
        groups = index.groups(grammar)
        assert groups is not None
        tokens = vocab_model.tokenize(reply.encode(), add_bos=False, special=False)
        compared = 0
        for token in tokens:
            if not step.pending:  # probing is used only on a whole character
                arr, data = token_array(np.zeros(n, dtype=np.float32))
                llama_cpp.llama_sampler_apply(step.grammar, ctypes.byref(arr))
                rows = np.ctypeslib.as_array(data)
                whole = np.sort(rows["id"][rows["logit"] != -np.inf])
                assert len(whole) > 0, (grammar, compared)  # the reply fits the grammar
                for by in (None, groups):
                    assert np.array_equal(np.sort(index.allowed(step._check, by)), whole), (
                        grammar, compared, by,
                    )  # fmt: skip
                compared += 1
            step._accept(None, token)
        assert compared > len(tokens) // 2
        llama_cpp.llama_sampler_free(step.sampler)
    # in a fixed literal the groups leave a few hundred checks, not one per first character
    step = grammar_topk.GrammarTopK(vocab, TURN, "root", 40, grammar_topk.TAIL_GAP, index=index)
    asked: list[int] = []

    def counted(ids: Any) -> Any:
        asked.append(len(ids))
        return step._check(ids)

    index.allowed(counted, index.groups(TURN))
    assert sum(asked) < len(index.single) + 1000, asked
    llama_cpp.llama_sampler_free(step.sampler)
    vocab_model.close()


def test_character_bounds_follow_the_grammar_parser() -> None:
    """Every character a grammar writes, and the one after, whatever the escape; none
    from comments or rule names; no groups at all for a grammar naming tokens."""
    bounds = grammar_topk.grammar_probe.char_bounds

    assert list(bounds(ODD)) == sorted(
        {c for ch in "Größe: azAZßü\u00e9 \u2014janei\n\x41\x5a!-" for c in (ord(ch), ord(ch) + 1)}
    )
    assert list(bounds(r'root ::= [^\x00-\x1f] "\"" [\[\]\-\\] # "x"')) == [
        0, 1, 31, 32, 34, 35, 45, 46, 91, 92, 93, 94,
    ]  # fmt: skip
    assert bounds("root ::= <think> [a-z]") is None
    assert bounds('root ::= !<[1000]> "a"') is None
    assert bounds('root ::= "<think>" [<!]') is not None  # quoted: characters, not tokens


def sample_chain(arr: Any, top_p: float, min_p: float) -> list[tuple[int, float]]:
    """What llama-cpp-python's chain does after top_k, up to what dist draws from."""
    import llama_cpp

    for sampler in (
        llama_cpp.llama_sampler_init_top_p(top_p, 1),
        llama_cpp.llama_sampler_init_min_p(min_p, 1),
        llama_cpp.llama_sampler_init_temp(0.8),
    ):
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
        llama_cpp.llama_sampler_free(sampler)
    return kept(arr)


@pytest.mark.parametrize("top_p,min_p", [(0.95, 0.05), (1.0, 0.05), (0.9, 0.1)])
def test_what_reaches_dist_is_the_same_when_min_p_drops_the_unchecked(
    top_p: float, min_p: float
) -> None:
    """The min_p shortcut and the probe leave arrays shorter than top_k's; what the
    samplers after them hand to dist must be the very same tokens and logits."""
    import llama_cpp
    import numpy as np

    model = vocab_only(str(resolve("gemma3-270m", load_config(MODELS_TOML)).path))
    index = grammar_topk.grammar_probe.PrefixIndex(model.vocab)
    n = index.n_vocab
    literal_start = model.tokenize(b"Decision", add_bos=False, special=False)[0]
    rng = np.random.default_rng(11)
    decided = {"fast": 0, "probed": 0, "full": 0}
    for trial in range(30):
        logits = rng.normal(0, 3, n).astype(np.float32)
        # the literal's first token somewhere from the head to the far tail
        logits[literal_start] = np.sort(logits)[-(1 + (trial * 977) % 20000)]
        grammar_sampler = llama_cpp.llama_sampler_init_grammar(
            model.vocab, LITERAL_FIRST.encode(), b"root"
        )
        top_k = llama_cpp.llama_sampler_init_top_k(40)
        arr, _keep = token_array(logits)
        llama_cpp.llama_sampler_apply(grammar_sampler, ctypes.byref(arr))
        llama_cpp.llama_sampler_apply(top_k, ctypes.byref(arr))
        expected = sample_chain(arr, top_p, min_p)
        step = grammar_topk.GrammarTopK(
            model.vocab, LITERAL_FIRST, "root", 40, grammar_topk.TAIL_GAP, top_p=top_p,
            min_p=min_p, index=index,
        )  # fmt: skip
        arr2, _keep2 = token_array(logits)
        step._apply(None, ctypes.pointer(arr2))
        assert sample_chain(arr2, top_p, min_p) == expected
        decided["fast"] += step.fast
        decided["probed"] += step.probed
        decided["full"] += step.full
        for s in (grammar_sampler, top_k, step.sampler):
            llama_cpp.llama_sampler_free(s)
    assert decided["fast"] > 0 and decided["probed"] > 0 and decided["full"] == 0
    model.close()


@pytest.mark.parametrize(
    "text,pending",
    [(b"", b""), (b"abc", b""), ("é".encode(), b""), ("é".encode()[:1], "é".encode()[:1]),
     ("ab€".encode()[:4], "€".encode()[:2]), ("😀".encode()[:3], "😀".encode()[:3]),
     (b"a\x80", b"?"), (b"\xff", b"?")],
)  # fmt: skip
def test_an_unfinished_character_is_found(text: bytes, pending: bytes) -> None:
    assert grammar_topk.unfinished_character(text) == pending


def test_the_prefix_index_is_kept_on_disk_and_rebuilt_when_unreadable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    path = smollm2_path()
    model = vocab_only(str(path))
    probe = grammar_topk.grammar_probe
    cache = tmp_path / "prefix-index"

    def same(a: Any, b: Any) -> bool:
        x, y = a.to_arrays(), b.to_arrays()
        return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)

    built = probe.cached(model.vocab, path, cache)
    (kept,) = cache.iterdir()
    assert not list(cache.glob("*.part"))
    with monkeypatch.context() as patch:  # read from disk: no token's text is asked for
        patch.setattr(probe, "piece", lambda *_: pytest.fail("the index was rebuilt"))
        loaded = probe.cached(model.vocab, path, cache)
    assert same(built, loaded) and same(built, probe.PrefixIndex(model.vocab))
    kept.write_bytes(kept.read_bytes()[:1000])  # cut short: rebuilt, and kept again whole
    assert same(probe.cached(model.vocab, path, cache), built)
    assert same(probe.PrefixIndex(model.vocab, dict(np.load(kept))), built)
    # a cache that cannot be written: the index all the same
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder would go")
    assert same(probe.cached(model.vocab, path, blocked / "prefix-index"), built)
    # a model file gone since it was loaded: built, not kept
    assert same(probe.cached(model.vocab, tmp_path / "gone.gguf", cache), built)
    assert len(list(cache.iterdir())) == 1
    model.close()
