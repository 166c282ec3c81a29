"""`helm template` for this repository's chart when no helm binary can be installed: the subset of Go
templates the chart uses (values, if/end with not/or/and, fail, toYaml | nindent, .Files.Get | nindent, include | sha256sum,
add),
nothing more.
An unknown action fails the render, so a template that needs more is caught, not silently mis-rendered."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(expr: str, ctx: dict[str, Any]) -> Any:
    if not expr.startswith("."):
        if re.fullmatch(r"-?\d+", expr):
            return int(expr)
        raise ValueError(f"unsupported expression {expr!r}")
    node: Any = ctx
    for part in expr.strip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class RenderFailed(Exception):
    """The chart called `fail` (helm prints the message and renders nothing)."""


def _condition(expr: str, ctx: dict[str, Any]) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false. `not X`, `or X Y ...`,
    `and X Y ...`, parenthesised."""
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")"):
        return _condition(expr[1:-1], ctx)
    name, _, rest = expr.partition(" ")
    if name in ("not", "or", "and"):
        args, depth, current = [], 0, ""
        for char in rest.strip() + " ":
            if char == " " and depth == 0:
                if current:
                    args.append(current)
                current = ""
                continue
            depth += (char == "(") - (char == ")")
            current += char
        values = [_condition(arg, ctx) for arg in args]
        if name == "not":
            (value,) = values
            return not value
        return any(values) if name == "or" else all(values)
    return bool(_lookup(expr, ctx))


def _eval(action: str, ctx: dict[str, Any], chart: Path) -> str:
    if m := re.fullmatch(r'fail "((?:[^"\\]|\\.)*)"', action):
        raise RenderFailed(m.group(1))
    if m := re.fullmatch(r"toYaml (\S+) \| nindent (\d+)", action):
        text = yaml.safe_dump(_lookup(m.group(1), ctx), sort_keys=False).rstrip("\n")
        pad = " " * int(m.group(2))
        return "\n" + "\n".join(pad + line for line in text.splitlines())
    if m := re.fullmatch(r'\.Files\.Get "([\w./-]+)" \| nindent (\d+)', action):
        pad = " " * int(m.group(2))
        return "\n" + "\n".join(pad + line for line in (chart / m.group(1)).read_text().rstrip("\n").splitlines())
    if m := re.fullmatch(r'include \(print \$\.Template\.BasePath "/([\w.-]+)"\) \. \| sha256sum', action):
        return hashlib.sha256(render_file(chart / "templates" / m.group(1), ctx, chart).encode()).hexdigest()
    if m := re.fullmatch(r"add (\S+) (\S+)", action):
        return str(int(_lookup(m.group(1), ctx)) + int(_lookup(m.group(2), ctx)))
    value = _lookup(action, ctx)
    if value is None:
        raise ValueError(f"{action} has no value")
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_file(path: Path, ctx: dict[str, Any], chart: Path) -> str:
    source = path.read_text()
    out: list[str] = []
    active: list[bool] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\n")
        if all(active):
            out.append(text)
        elif m.group(1) and out:
            pass
        pos = m.end()
        action = m.group(2)
        if action.startswith("if "):
            active.append(_condition(action[3:], ctx))
        elif action == "end":
            active.pop()
        elif all(active):
            out.append(_eval(action, ctx, chart))
    out.append(source[pos:] if all(active) else "")
    return "".join(out)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def render(chart: Path, values: dict[str, Any] | None = None, release: str = "bridge") -> list[dict[str, Any]]:
    """Every object the chart renders with these values (merged over values.yaml)."""
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    ctx = {
        "Values": _merge(defaults, values or {}),
        "Release": {"Name": release},
        "Chart": yaml.safe_load((chart / "Chart.yaml").read_text()),
    }
    objects: list[dict[str, Any]] = []
    for path in sorted((chart / "templates").glob("*.yaml")):
        objects += [doc for doc in yaml.safe_load_all(render_file(path, ctx, chart)) if doc]
    return objects
