"""Push a model: every layer and the config blob, then the local manifest bytes
(server/images.go PushModel)."""

from __future__ import annotations

from typing import Iterator

from registry.errors import APIError
from registry.manifest import Layer, Manifest
from registry.names import ModelName, parse_name
from registry.oci.client import RegistryClient, RegistryError, RegistryOptions, base_url
from registry.oci.progress import Background, Progress, layer_progress, status, watch
from registry.oci.upload import Upload
from registry.store import Store


def push_model(store: Store, raw_name: str, options: RegistryOptions) -> Iterator[Progress]:
    """Check the name, the scheme and that the model exists now (400/404 before the stream),
    then return the progress generator."""
    name = parse_name(raw_name)
    base_url(name, options)
    resolved = store.resolve(name)
    if resolved is None:
        raise APIError(404, f"model '{name.display_shortest()}' not found")
    return _push(store, resolved, options)


def _push(store: Store, resolved: ModelName, options: RegistryOptions) -> Iterator[Progress]:
    yield status("retrieving manifest")
    data = store.read_manifest_bytes(resolved)
    manifest = Manifest.from_bytes(data)
    with RegistryClient(resolved, options) as client:
        for layer in manifest.all_layers():
            yield from _push_layer(store, client, layer)
        yield status("pushing manifest")
        resp = client.request("PUT", client.url(f"manifests/{resolved.tag}"),
                              headers={"Content-Type": manifest.media_type}, content=data)
        resp.close()
    yield status("success")


def _push_layer(store: Store, client: RegistryClient, layer: Layer) -> Iterator[Progress]:
    path = store.blob_path(layer.digest)
    if not path.is_file():
        raise RegistryError(f"blob {layer.digest} is missing from the store")
    upload = Upload(client, layer, path)
    if upload.exists():
        yield layer_progress("pushing", layer.digest, layer.size, layer.size)
        return
    url = upload.start()
    if url is None:  # mounted from the repository the layer came from
        yield layer_progress("pushing", layer.digest, layer.size, layer.size)
        return
    job = Background(lambda: upload.run(url, client.options.part_size),
                     name=f"upload-{layer.digest[7:19]}")
    try:
        yield from watch(job.done, lambda: layer_progress(
            "pushing", layer.digest, layer.size, min(upload.completed, layer.size)))
    finally:
        if not job.done.is_set():  # the client went away: stop sending
            upload.cancel.set()
    if job.error is not None:
        err = job.error
        if isinstance(err, APIError):
            raise RegistryError(err.message, getattr(err, "status_code", 0))
        raise RegistryError(str(err) or type(err).__name__)
