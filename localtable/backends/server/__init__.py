"""Panelists on llama.cpp's own HTTP server (llama-server)."""
