"""Model-name patterns a key may use: shell globs over the names users write.

A pattern is matched, case-insensitively, against the name in its shortest display form
(`gemma3:270m`, `team-a/chat:latest`, `host:5000/ns/m:v1`) and its full form
(`registry.ollama.ai/library/gemma3:270m`); a pattern without a tag matches every tag, so
`gemma3` allows `gemma3:270m` and `team-a/*` allows everything under `team-a/`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from registry.names import ModelName


def _forms(name: str) -> list[str]:
    parsed = ModelName.parse(name.strip())
    if not parsed.is_valid():
        return [name.strip().lower()]
    short, full = parsed.display_shortest().lower(), str(parsed).lower()
    return [short, full, short.rsplit(":", 1)[0], full.rsplit(":", 1)[0]]


def _has_tag(pattern: str) -> bool:
    return pattern.rfind(":") > pattern.rfind("/")


@dataclass(frozen=True)
class ModelPatterns:
    patterns: tuple[str, ...] = ()  # empty: every model

    def allows(self, name: str) -> bool:
        if not self.patterns:
            return True
        forms = _forms(name)
        tagged, untagged = forms[:2], forms[2:]
        for pattern in self.patterns:
            p = pattern.strip().lower()
            candidates = tagged if _has_tag(p) else tagged + untagged
            if any(fnmatch.fnmatchcase(form, p) for form in candidates):
                return True
        return False
