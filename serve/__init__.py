"""Corral: Ollama-compatible LLM server."""
