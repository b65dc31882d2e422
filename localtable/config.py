"""models.toml: the models, the panels and the debate defaults.

Every table is a pydantic model with extra="forbid", so a typo in a key is an
error that names the file, the key and what was expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from localtable import backends  # the registry alone: which model validates a source kind
from localtable.errors import ConfigError
from localtable.safefiles import FileRefused, check_depth, read_bounded

CONFIG_MAX_BYTES = 16 << 20  # a models.toml of hundreds of models is a few KiB
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """A model's `source` table. Its `kind` says which backend runs the model: each
    backend registers the kinds it runs with the pydantic model of each (backends/
    __init__.py), and ModelSpec validates a source with the model its kind names."""

    kind: str
    # a model of this kind must pin its file's sha256 in models.toml
    needs_sha256: ClassVar[bool] = False

    def label(self) -> str:
        """What `localtable models` shows as the model's source."""
        return self.kind


def _registered_source(value: object) -> Source:
    """The source table validated by the model registered for its kind."""
    if isinstance(value, Source):  # already validated (model_copy, a worker's spec)
        return value
    if not isinstance(value, dict):
        raise ValueError('give the source as a table, e.g. { kind = "path", path = "..." }')
    try:
        model = backends.source_model(value.get("kind"))
    except ConfigError as exc:  # an unknown kind: the error names the model's source
        raise ValueError(str(exc)) from None
    if not (isinstance(model, type) and issubclass(model, Source)):
        raise ValueError(
            f"source kind {value['kind']!r} is registered with a model that is "
            "not a localtable.config.Source; fix the backend that registers it"
        )
    return model.model_validate(value)


# The source of a model, by its kind; dumped with the fields of its own model
ModelSource = Annotated[SerializeAsAny[Source], PlainValidator(_registered_source)]


class ModelSpec(Strict):
    """One GGUF model and how llama.cpp runs it."""

    source: ModelSource
    sha256: Sha256 | None = Field(
        default=None, description="expected sha256 of the whole file (required for package)"
    )
    size: int | None = Field(default=None, ge=1)
    n_ctx: int = Field(default=4096, ge=256, le=262144)
    chat: Literal["auto", "template", "completion"] = Field(
        default="auto",
        description="template: the GGUF chat template; completion: a plain transcript prompt; "
        "auto: template when the GGUF has one",
    )
    # ggml pins at most GGML_MAX_N_THREADS = 512 threads (ggml.h): a larger number is a
    # typo, and one past 2**31 would wrap in llama.cpp's int32
    threads: int = Field(
        default=0, ge=0, le=512, description="0 = the cores available to the process"
    )
    gpu_layers: int = Field(default=0, ge=-1)
    license: str | None = None

    @model_validator(mode="after")
    def _pinned_when_needed(self) -> ModelSpec:
        if self.source.needs_sha256 and self.sha256 is None:
            raise ValueError(
                f"a {self.source.kind} source needs sha256 = the expected hash of the file"
            )
        return self


class Sampling(Strict):
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    # top_k beyond the largest vocabulary (Gemma 3's, 262,144 tokens) keeps every token,
    # as 0 does; a bigger number is a typo, and past 2**31 llama.cpp's int32 would wrap
    # it to a negative k, which turns the sampler off without a word
    top_k: int = Field(default=40, ge=0, le=1_000_000)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    # llama.cpp divides a repeated token's logit by it (1 = off, 1.1-1.3 usual); past 10
    # every repeated token is all but banned, and inf would make the logits 0 or -inf
    repeat_penalty: float = Field(default=1.1, ge=0.0, le=10.0)
    typical_p: float = Field(default=1.0, gt=0.0, le=1.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    max_tokens: int = Field(default=192, ge=16, le=8192)


class PanelistSpec(Strict):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[^\n\r\t|:]+$")
    model: str
    persona: str = ""
    sampling: Sampling = Sampling()


class PanelSpec(Strict):
    panelists: list[PanelistSpec] = Field(min_length=2, max_length=8)
    summarizer: str | None = Field(default=None, description="a panelist's name; default: first")
    anonymous: bool = Field(
        default=False, description="show peers as 'Panelist A/B/..' instead of by name"
    )

    @model_validator(mode="after")
    def _names(self) -> PanelSpec:
        names = [p.name for p in self.panelists]
        if len(set(names)) != len(names):
            raise ValueError(f"panelist names must be unique, got {names}")
        if self.summarizer is not None and self.summarizer not in names:
            raise ValueError(f"summarizer {self.summarizer!r} is not a panelist (have {names})")
        return self

    def summarizer_spec(self) -> PanelistSpec:
        name = self.summarizer or self.panelists[0].name
        return next(p for p in self.panelists if p.name == name)


class DebateDefaults(Strict):
    panel: str = "default"
    rounds: int = Field(default=2, ge=1, le=10)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    question: str = ""
    parallel_turns: int = Field(
        default=0,
        ge=0,
        le=8,
        description="turns of a round run at the same time, at most; 0 = as many as the "
        "backends run well (the transcript is the same either way)",
    )
    # sequential until `make bench`'s decode round shows batched faster here: on the tiny
    # models it did not (docs/benchmarks.md, issue #28)
    decode: Literal["sequential", "batched"] = Field(
        default="sequential",
        description="a round's turns on one model decoded together, as sequences of one "
        "context (the text then depends on the group, which the record keeps), or one "
        "after another",
    )


class Config(Strict):
    debate: DebateDefaults = DebateDefaults()
    models: dict[str, ModelSpec]
    panels: dict[str, PanelSpec]

    @model_validator(mode="after")
    def _references(self) -> Config:
        for panel_name, panel in self.panels.items():
            for i, p in enumerate(panel.panelists):
                if p.model not in self.models:
                    raise ValueError(
                        f"panels.{panel_name}.panelists[{i}].model: unknown model {p.model!r} "
                        f"(models.toml defines {sorted(self.models)})"
                    )
        if self.debate.panel not in self.panels:
            raise ValueError(
                f"debate.panel: unknown panel {self.debate.panel!r} (have {sorted(self.panels)})"
            )
        return self

    def panel(self, name: str) -> PanelSpec:
        if name not in self.panels:
            raise ConfigError(
                f"unknown panel {name!r}: models.toml defines {', '.join(sorted(self.panels))}"
            )
        return self.panels[name]


class LoadedConfig(BaseModel):
    """A validated config and the file it came from (relative paths resolve against it)."""

    model_config = ConfigDict(frozen=True)
    path: Path
    config: Config


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = _location(tuple(first["loc"]))
    kind = first["type"]
    if kind == "extra_forbidden":
        what = "unknown key (check its spelling; README.md lists every key)"
    elif kind == "missing":
        what = "required key is missing"
    else:
        what = first["msg"].removeprefix("Value error, ")
        if (
            "input" in first
            and kind not in ("model_type",)
            and not isinstance(first["input"], dict)
            and not where.endswith("source.url")  # it may hold credentials
        ):
            what += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {where + ': ' if where else ''}{what}{tail}"


def load_config(path: Path) -> LoadedConfig:
    """Read and validate models.toml; every problem is a one-line ConfigError."""
    try:
        text = read_bounded(path, CONFIG_MAX_BYTES).decode("utf-8")
        check_depth(text, toml=True)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; pass --config with the path of models.toml"
        ) from None
    except FileRefused as exc:
        raise ConfigError(f"{path}: cannot read it: it {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from None
    return LoadedConfig(path=path.resolve(), config=config)
