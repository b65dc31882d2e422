"""Debate protocols as data: a folder of prompt and grammar templates and its protocol.toml.

protocol.toml says how a debate runs the templates beside it (ProtocolSettings in
record.py: the system prompt and personas, how peers are named and what of them
a later round shows, structured turns under a grammar or free text read by an
answer rule, max_tokens per round, whether there are labels and a summary). Two
are built in, in prompts/protocols/: `roundtable` (localtable's own) and `du2023`
(Du et al. 2023's arithmetic protocol); `--protocol PATH` runs a folder of the
user's, such as an edited copy of one of them.

A folder is read once, bounded, before any model loads: protocol.toml and every
`*.j2` file in it, each of which must be UTF-8 and compile; the templates its
settings render must all be there. A debate renders the texts read then, never the
files again, and the record keeps the protocol's name, where it was read, its
settings and the sha256 of every file (RunRecord.protocol, RunRecord.templates).
Resume and replay read it again from there and refuse it when a file changed, as
they refuse a changed template.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from localtable.config import LoadedConfig, describe_validation_error
from localtable.errors import ConfigError
from localtable.record import ProtocolRecord, ProtocolSettings, RunRecord
from localtable.safefiles import FileRefused, check_depth, read_bounded
from localtable.templates import TemplateSet, builtin_dir

PROTOCOL_FILE = "protocol.toml"
DEFAULT = "roundtable"
BUILT_IN = "built-in"
FILE_MAX_BYTES = 256 << 10  # a template or protocol.toml; ours are a few KiB
MAX_FILES = 32
# The backend's prompt layout for models without a chat template: not a protocol's.
BACKEND_TEMPLATES = ("completion.j2",)


def builtin_protocols() -> Path:
    return builtin_dir() / "protocols"


def builtin_names() -> list[str]:
    return sorted(p.name for p in builtin_protocols().iterdir() if (p / PROTOCOL_FILE).is_file())


class ProtocolFile(ProtocolSettings):
    """protocol.toml as written: the settings, with the limits and rules a new run needs
    (a record keeps the settings without them, so tightening one never makes it
    unreadable)."""

    description: str = Field(default="", max_length=1000)
    max_tokens: list[Annotated[int, Field(ge=16, le=8192)]] = Field(
        default_factory=list, max_length=10
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolFile:
        if self.output == "free" and not self.answer_rule:
            raise ValueError('output = "free" needs an answer_rule, e.g. "last_number"')
        if self.output == "structured" and self.answer_rule:
            raise ValueError('answer_rule reads free text: set output = "free", or remove it')
        if self.output == "free" and (self.labels or self.summary):
            raise ValueError(
                'output = "free" is read by its answer rule alone: the labels and the summary '
                "read structured turns; set labels = false and summary = false"
            )
        if self.personas and not self.system_prompt:
            raise ValueError(
                "personas are part of the system prompt: set system_prompt = true, or "
                "personas = false"
            )
        return self


def required_templates(settings: ProtocolSettings) -> list[str]:
    """The templates a debate under these settings renders (each must be in the folder)."""
    names = ["round1.j2", "round_later.j2"]
    if settings.system_prompt:
        names.insert(0, "system.j2")
    if settings.output == "structured":
        names += ["turn.gbnf.j2", "sentence.gbnf.j2"]
    if settings.labels:
        names += ["label.j2", "label.gbnf.j2", "sentence.gbnf.j2", "summary_system.j2"]
    if settings.summary:
        names += ["summarize.j2", "summary_system.j2", "summary.gbnf.j2", "sentence.gbnf.j2"]
    return list(dict.fromkeys(names))


_TEMPLATE_SETS: dict[str, TemplateSet] = {}


class Protocol(BaseModel):
    """A protocol as read: its settings and the text of each file (sent as it is to a
    batch's workers, which never read the folder)."""

    model_config = ConfigDict(frozen=True)
    name: str
    source: str = Field(description='"built-in", or the folder it was read from')
    settings: ProtocolSettings
    files: dict[str, str] = Field(description="protocol.toml and every template, as read")

    @property
    def folder(self) -> Path:
        return builtin_protocols() / self.name if self.source == BUILT_IN else Path(self.source)

    def hashes(self) -> dict[str, str]:
        """File name -> sha256 of its bytes (UTF-8 text encodes back to them)."""
        return {n: hashlib.sha256(t.encode("utf-8")).hexdigest() for n, t in self.files.items()}

    def record(self) -> ProtocolRecord:
        return ProtocolRecord(name=self.name, source=self.source, settings=self.settings)

    def templates(self) -> TemplateSet:
        """Its templates, and nothing else (one set per protocol, compiled once)."""
        key = hashlib.sha256(
            repr((self.source, sorted(self.hashes().items()))).encode()
        ).hexdigest()
        if key not in _TEMPLATE_SETS:
            templates = {n: t for n, t in self.files.items() if n != PROTOCOL_FILE}
            _TEMPLATE_SETS[key] = TemplateSet(files=templates, origin=self.folder)
        return _TEMPLATE_SETS[key]

    def check_question(self, kind: str) -> None:
        """Refuse a question kind this protocol cannot run, before anything loads."""
        s = self.settings
        if s.output == "free" and kind != "number":
            raise ConfigError(
                f"protocol {self.name} reads its answers from free text by the rule "
                f"{s.answer_rule!r}, which reads a number: it runs number questions only "
                "(e.g. `localtable batch --task arithmetic`), not this "
                f"{'open' if kind == 'open' else kind} question"
            )
        if kind == "open" and s.summary and not s.labels:
            raise ConfigError(
                f"protocol {self.name} has a summary but no labels: the summary of an open "
                "question reads its labelled positions; set labels = true in its "
                f"{PROTOCOL_FILE}, or ask a choice or number question"
            )


def _read_text(path: Path) -> str:
    try:
        return read_bounded(path, FILE_MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except FileRefused as exc:
        raise ConfigError(f"{path}: cannot read it: it {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _settings(path: Path) -> ProtocolSettings:
    text = _read_text(path)
    try:
        check_depth(text, toml=True)
        raw = tomllib.loads(text)
        checked = ProtocolFile.model_validate(raw)
    except FileRefused as exc:
        raise ConfigError(f"{path}: cannot read it: it {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc, docs="docs/protocol.md")) from None
    return ProtocolSettings.model_validate(checked.model_dump())


def _templates_in(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.name.endswith(".j2"))
    if len(found) > MAX_FILES:
        raise ConfigError(
            f"{folder}: {len(found)} templates; a protocol folder holds at most {MAX_FILES}"
        )
    return found


def load_folder(folder: Path, *, name: str | None = None) -> Protocol:
    """The protocol in a folder (a built-in one when `name` is given), checked whole:
    its settings, every template it needs there, each compiling."""
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: no such protocol folder; give a built-in protocol "
            f"({', '.join(builtin_names())}) or a folder holding a {PROTOCOL_FILE}"
        )
    settings = _settings(folder / PROTOCOL_FILE)
    files = {PROTOCOL_FILE: _read_text(folder / PROTOCOL_FILE)}
    files.update({p.name: _read_text(p) for p in _templates_in(folder)})
    protocol = Protocol(
        name=name or folder.resolve().name,
        source=BUILT_IN if name else str(folder.resolve()),
        settings=settings,
        files=files,
    )
    missing = [n for n in required_templates(settings) if n not in files]
    if missing:
        raise ConfigError(
            f"{folder}: no {', '.join(missing)}: protocol {protocol.name} renders "
            f"{'it' if len(missing) == 1 else 'them'} (see its {PROTOCOL_FILE}); copy "
            f"{'it' if len(missing) == 1 else 'them'} from {builtin_protocols() / DEFAULT}"
        )
    templates = protocol.templates()
    for template in required_templates(settings):
        templates.compile(template)
    return protocol


def load_protocol(spec: str, base: Path) -> Protocol:
    """`--protocol NAME|PATH`, or models.toml's [debate] protocol: a built-in name, or a
    folder (a path: it has a slash or starts with a dot), relative to `base`."""
    if os.sep in spec or "/" in spec or spec.startswith("."):
        return load_folder(base / Path(spec).expanduser())
    if spec in builtin_names():
        return load_folder(builtin_protocols() / spec, name=spec)
    hint = f"; a folder of your own is a path, e.g. ./{spec}/" if (base / spec).is_dir() else ""
    raise ConfigError(
        f"unknown protocol {spec!r}: the built-in ones are {', '.join(builtin_names())}"
        f"{hint or ', and a folder of your own is a path (my-protocol/)'}"
    )


def builtin_protocol(name: str = DEFAULT) -> Protocol:
    return load_folder(builtin_protocols() / name, name=name)


def recorded_protocol(record: RunRecord) -> Protocol:
    """The protocol a record ran, read again from where it was (roundtable for a record
    before protocols), before checking it (check_recorded)."""
    recorded = record.protocol
    if recorded is None:
        return builtin_protocol()
    if recorded.source == BUILT_IN:
        if recorded.name not in builtin_names():
            raise ConfigError(
                f"run {record.run_id} ran the protocol {recorded.name!r}, which this "
                f"localtable does not have (built in: {', '.join(builtin_names())})"
            )
        return builtin_protocol(recorded.name)
    folder = Path(recorded.source)
    if not folder.is_dir():
        raise ConfigError(
            f"run {record.run_id} ran the protocol folder {folder}, which is not here; "
            "put the folder back there to rerun it"
        )
    return load_folder(folder)


def check_recorded(record: RunRecord, protocol: Protocol, builtins: TemplateSet) -> None:
    """Refuse to rerun a record whose protocol or templates changed since it ran: each
    file it recorded must have its recorded sha256 (the protocol's files in the
    protocol's folder, the backend's prompt layout among the built-ins)."""
    ours = protocol.hashes()
    for name, recorded in sorted(record.templates.items()):
        if name in BACKEND_TEMPLATES:
            current: str | None = builtins.sha256(name)
        else:
            current = ours.get(name)
        if current == recorded:
            continue
        now = f"now {current[:12]}" if current else f"now missing from {protocol.folder}"
        raise ConfigError(
            f"{'prompt template' if name.endswith('.j2') else 'protocol file'} {name} changed "
            f"since run {record.run_id} (recorded sha256 {recorded[:12]}, {now}); restore it "
            "to rerun this run"
        )
    if record.protocol is not None and record.protocol.settings != protocol.settings:
        raise ConfigError(
            f"protocol {protocol.name} reads other settings than run {record.run_id} "
            "recorded; restore its files to rerun this run"
        )


def chosen_protocol(spec: str | None, loaded: LoadedConfig) -> Protocol:
    """`--protocol` (a path relative to the working folder), else models.toml's [debate]
    protocol (a path relative to models.toml)."""
    if spec is not None:
        return load_protocol(spec, Path.cwd())
    return load_protocol(loaded.config.debate.protocol, loaded.path.parent)
