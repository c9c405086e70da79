"""Pull a model: manifest, every layer and the config blob, then the manifest, verbatim, last
(server/images.go PullModel)."""

from __future__ import annotations

import hashlib
from typing import Iterator

from registry.errors import APIError, no_space
from registry.manifest import MEDIA_TYPE_MANIFEST, Layer, Manifest
from registry.names import parse_name
from registry.oci.client import RegistryClient, RegistryError, RegistryOptions, base_url
from registry.oci.download import DOWNLOADS, Cancelled, DigestMismatch
from registry.oci.progress import Progress, layer_progress, status, watch
from registry.store import Store, validate_digest

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_OCI_MANIFEST}"


def fetch_manifest(client: RegistryClient, tag: str) -> tuple[bytes, Manifest]:
    """The registry's manifest bytes and their parse; errors are `pull model manifest: ...`."""
    try:
        resp = client.request("GET", client.url(f"manifests/{tag}"),
                              headers={"Accept": MANIFEST_ACCEPT})
        raw = resp.read()
        resp.close()
    except RegistryError as err:
        raise RegistryError(f"pull model manifest: {err.message}", err.status_code) from None
    want = resp.headers.get("docker-content-digest", "")
    got = "sha256:" + hashlib.sha256(raw).hexdigest()
    if want.startswith("sha256:") and want.lower() != got:
        raise RegistryError(f"pull model manifest: digest mismatch: want {want}, got {got}")
    try:
        manifest = Manifest.from_bytes(raw)
        for layer in manifest.all_layers():
            layer.digest = validate_digest(layer.digest)
    except (ValueError, APIError) as err:
        raise RegistryError(f"pull model manifest: invalid manifest: {err}") from None
    if not manifest.config.digest:
        raise RegistryError("pull model manifest: invalid manifest: no config")
    return raw, manifest


def pull_model(store: Store, raw_name: str, options: RegistryOptions) -> Iterator[Progress]:
    """Check the name (400 `invalid model name`), the scheme (400 `insecure protocol http`) and
    fetch the manifest (404 for a missing model) now, so these fail as a status before the
    stream starts; then return the progress generator."""
    name = store.canonical(parse_name(raw_name))
    base_url(name, options)
    with RegistryClient(name, options) as client:
        try:
            raw, manifest = fetch_manifest(client, name.tag)
        except RegistryError as err:
            raise err.before_stream() from None
    return _pull(store, name, options, raw, manifest)


def _pull(store: Store, name, options: RegistryOptions, raw: bytes,
          manifest: Manifest) -> Iterator[Progress]:
    yield status("pulling manifest")
    with RegistryClient(name, options) as client:
        mismatches: list[DigestMismatch] = []
        for layer in manifest.all_layers():
            yield from _pull_layer(store, client, layer, mismatches)
    yield status("verifying sha256 digest")
    if mismatches:
        raise mismatches[0]
    yield status("writing manifest")
    with store.lock(name), store.gc_lock:
        missing = [x.digest for x in manifest.all_layers() if not store.has_blob(x.digest)]
        if missing:  # removed by a concurrent delete since it was downloaded
            raise RegistryError(f"blob {missing[0]} disappeared during the pull, pull again")
        old_digests: set[str] = set()
        try:
            old_digests = {x.digest for x in store.read_manifest(name).all_layers()}
        except (OSError, ValueError):
            pass
        store.write_manifest(name, raw)
    unused = old_digests - {x.digest for x in manifest.all_layers()}
    if unused and not options.noprune:
        yield status("removing unused layers")
        store.remove_unreferenced(unused)
    yield status("success")


def _pull_layer(store: Store, client: RegistryClient, layer: Layer,
                mismatches: list[DigestMismatch]) -> Iterator[Progress]:
    if store.has_blob(layer.digest):
        yield layer_progress("pulling", layer.digest, layer.size, layer.size)
        return
    dl = DOWNLOADS.acquire(store, layer.digest, layer.size, client.fork)
    try:
        yield from watch(dl.finished,
                         lambda: layer_progress("pulling", layer.digest, dl.total, dl.completed))
    finally:
        DOWNLOADS.release(dl)
    err = dl.error
    if isinstance(err, DigestMismatch):
        mismatches.append(err)
    elif isinstance(err, Cancelled):
        raise RegistryError(str(err))
    elif (full := no_space(err)) is not None:
        raise full
    elif isinstance(err, APIError):
        raise RegistryError(err.message, getattr(err, "status_code", 0))
    elif err is not None:
        raise RegistryError(f"{type(err).__name__}: {err}" if not str(err) else str(err))
