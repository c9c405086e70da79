"""Ollama's model-name grammar (types/model/name.go, internal/modelref).

`[scheme://][host/][namespace/]model[:tag]`, defaults `registry.ollama.ai`, `library`, `latest`.
A name is only usable for the store when every part passes its character and length rule, which
also rules out path traversal: no part may start with `.`, and `/`, `\\`, NUL and `@` are never
allowed inside a part.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import APIError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"
MISSING_PART = "!MISSING!"

_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_EXTRA_CHARS = {"host": "-_.:", "namespace": "-_", "model": "-_.", "tag": "-_."}


def _is_alnum_or_underscore(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "_"


def is_valid_part(kind: str, s: str) -> bool:
    if not 1 <= len(s) <= _MAX_LEN[kind]:
        return False
    if not _is_alnum_or_underscore(s[0]):
        return False
    extra = _EXTRA_CHARS[kind]
    return all(_is_alnum_or_underscore(c) or c in extra for c in s[1:])


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return s[:i], s[i + len(sep):] or MISSING_PART, True


@dataclass(frozen=True)
class ModelName:
    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    scheme: str = ""

    @classmethod
    def parse_bare(cls, s: str) -> "ModelName":
        """Split without filling defaults; empty parts after a separator become `!MISSING!`."""
        host = namespace = tag = scheme = ""
        if s.rfind(":") > s.rfind("/"):
            s, tag, _ = _cut_promised(s, ":")
        s, model, promised = _cut_promised(s, "/")
        if not promised:
            return cls("", "", s, tag)
        s, namespace, promised = _cut_promised(s, "/")
        if not promised:
            return cls("", s, model, tag)
        if "://" in s:
            scheme, host = s.split("://", 1)
        else:
            host = s
        return cls(host, namespace, model, tag, scheme)

    @classmethod
    def parse(cls, s: str) -> "ModelName":
        n = cls.parse_bare(s)
        return cls(
            n.host or DEFAULT_HOST,
            n.namespace or DEFAULT_NAMESPACE,
            n.model,
            n.tag or DEFAULT_TAG,
            n.scheme or DEFAULT_SCHEME,
        )

    def is_valid(self) -> bool:
        return (
            is_valid_part("host", self.host)
            and is_valid_part("namespace", self.namespace)
            and is_valid_part("model", self.model)
            and is_valid_part("tag", self.tag)
        )

    def is_fully_qualified(self) -> bool:
        return self.is_valid()

    def display_shortest(self) -> str:
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def filepath(self) -> str:
        """Manifest path relative to `manifests/`; only meaningful for a valid name."""
        if not self.is_valid():
            raise APIError(400, "invalid model name")
        return "/".join(self.parts())

    def key(self) -> tuple[str, ...]:
        """Case-folded identity, for case-insensitive comparison and locking."""
        return tuple(p.lower() for p in self.parts())

    def equal_fold(self, other: "ModelName") -> bool:
        return self.key() == other.key()

    def with_parts(self, parts: tuple[str, str, str, str]) -> "ModelName":
        return ModelName(*parts, scheme=self.scheme)


# internal/modelref: a `:local`/`:cloud` (or `:tag-cloud`) suffix picks the source.
SOURCE_LOCAL = "local"
SOURCE_CLOUD = "cloud"


def _split_source_suffix(raw: str) -> tuple[str, str]:
    i = raw.rfind(":")
    if i < 0 or raw.rfind("/") > i:
        return raw, ""
    suffix = raw[i + 1:].strip()
    low = suffix.lower()
    if low in (SOURCE_LOCAL, SOURCE_CLOUD):
        return raw[:i], low
    if low.endswith("-cloud"):
        return raw[: i + 1] + suffix[: -len("-cloud")], SOURCE_CLOUD
    return raw, ""


def parse_ref(raw: str) -> tuple[ModelName, str]:
    """Parse a client-given name: strip a `:local`/`:cloud` suffix, return (name, source).

    Raises APIError 400 for both suffixes together or an invalid name.
    """
    raw_s = raw.strip()
    base, source = _split_source_suffix(raw_s)
    if source and _split_source_suffix(base)[1]:
        raise APIError(400, f'use either :local or :cloud, not both: "{raw}"')
    name = ModelName.parse(base)
    if not name.is_valid():
        raise APIError(400, "invalid model name")
    return name, source


def parse_name(raw: str) -> ModelName:
    """Parse and validate a name (source suffix stripped); APIError 400 if invalid."""
    return parse_ref(raw)[0]
