"""Pull and push over the OCI distribution protocol (Ollama's server/images.go, download.go,
upload.go, auth.go).

`pull_model(store, name, options)` and `push_model(...)` validate the name and return a
generator of Ollama's progress messages; errors are APIError (RegistryError: status 500, as
Ollama's handlers report them). Everything configurable arrives in `RegistryOptions`.
"""

from registry.oci.auth import ensure_keypair, load_docker_auths, parse_credentials_spec
from registry.oci.client import RegistryError, RegistryOptions
from registry.oci.pull import pull_model
from registry.oci.push import push_model

__all__ = ["RegistryError", "RegistryOptions", "ensure_keypair", "load_docker_auths",
           "parse_credentials_spec", "pull_model", "push_model"]
