"""localtable: offline AI roundtable debates between open-weight GGUF models."""

__version__ = "0.1.0"
