"""Versions reported on the wire and by the CLI."""

from importlib.metadata import PackageNotFoundError, version

# /api/version answers with the Ollama API level Corral implements: clients gate features on it.
OLLAMA_API_VERSION = "0.33.0"

try:
    CORRAL_VERSION = version("corral")
except PackageNotFoundError:  # running from a source tree that was never installed
    CORRAL_VERSION = "0.0.0"
