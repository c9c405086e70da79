"""The chart README's values table, generated from values.yaml (defaults) and values.schema.json
(types, descriptions): `python helm/values_table.py --write` rewrites it, `--check` fails if stale.

A value is a leaf where the schema stops describing properties (a Kubernetes object passed
through, a map, a list); every leaf must have a description, and the schema and values.yaml
must name the same leaves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "corral"
START, END = "<!-- values:start -->", "<!-- values:end -->"


def _resolve(node: dict, root: dict) -> dict:
    """A schema node with its local $ref merged in (the node's own keys win)."""
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    merged = {**_resolve(target, root), **node}
    merged.pop("$ref")
    return merged


def leaves(schema: dict, root: dict | None = None, prefix: str = "") -> dict[str, dict]:
    """Dotted path → resolved schema node, for every value the schema describes."""
    root = root or schema
    out: dict[str, dict] = {}
    for name, node in schema.get("properties", {}).items():
        node = _resolve(node, root)
        path = f"{prefix}{name}"
        if node.get("properties"):
            out.update(leaves(node, root, path + "."))
        else:
            out[path] = node
    return out


def _value(values: dict, path: str):
    for part in path.split("."):
        values = values[part]
    return values


def value_paths(values: dict, schema_leaves: dict[str, dict], prefix: str = "") -> set[str]:
    """Dotted paths of values.yaml, cut where the schema has a leaf."""
    paths = set()
    for name, value in values.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and path not in schema_leaves:
            paths |= value_paths(value, schema_leaves, path + ".")
        else:
            paths.add(path)
    return paths


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type", "any")
    return "/".join(kind) if isinstance(kind, list) else kind


def problems() -> list[str]:
    """What makes the schema and values.yaml disagree (empty when they agree)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    found = leaves(schema)
    paths = value_paths(values, found)
    out = [f"{p}: in values.yaml, not in values.schema.json" for p in sorted(paths - found.keys())]
    out += [f"{p}: in values.schema.json, not in values.yaml" for p in sorted(found.keys() - paths)]
    out += [f"{p}: no description in values.schema.json" for p, n in sorted(found.items()) if not n.get("description")]
    return out


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| value | type | default | description |", "|---|---|---|---|"]
    for path, node in leaves(schema).items():
        default = json.dumps(_value(values, path)).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(node)} | `{default}` | {node.get('description', '')} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    if issues := problems():
        print("\n".join(issues), file=sys.stderr)
        return 1
    if "--write" in argv:
        readme_path.write_text(render(readme))
        return 0
    if render(readme) != readme:
        print(f"{readme_path} is stale: run python helm/values_table.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
