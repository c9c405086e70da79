"""Translations between the wire protocols (native Ollama, OpenAI, Anthropic) and engine requests."""
