"""Panelists on OpenAI-compatible servers: Ollama, vLLM, SGLang, LM Studio, llama-server's /v1."""
