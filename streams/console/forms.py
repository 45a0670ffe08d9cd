"""Forms whose inputs are named by the API body's dotted paths (``store.host``, ``poll.x``).

One list of :class:`Input` describes a form: the template renders it (``form.html``), and
:func:`body_of` turns what was submitted back into the API's JSON body. Because the names are the
API's paths, the API's field errors (``store.port: ...``) land beside the right input.

Inputs may apply only to some choices (``when={"type": {"sftp"}}``): the browser hides the
others (``console.js``), and :func:`body_of` ignores them whatever was sent, so the page also
works with JavaScript off. An empty input is left out of the body, so the API's default (or, in
a patch, the current value) applies; secret inputs are never filled back in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal[
    "text", "password", "number", "textarea", "select", "checkbox", "email", "date", "time", "lines"
]


@dataclass(frozen=True)
class Input:
    """One form input."""

    name: str
    label: str
    kind: Kind = "text"
    hint: str | None = None
    required: bool = False
    options: tuple[tuple[str, str], ...] = ()
    when: Mapping[str, frozenset[str]] = field(default_factory=dict)
    secret: bool = False
    """Never filled back in from stored values (passwords, keys)."""
    body: bool = True
    """False: a switch of the form (which credential), not a member of the body."""
    number: type = int
    empty: str | None = None
    """Sent when the input is left empty (None: leave the member out)."""

    @property
    def id(self) -> str:
        """The element id (dots are awkward in CSS selectors)."""
        return self.name.replace(".", "-")

    def applies(self, chosen: Mapping[str, str]) -> bool:
        """True when every switch this input depends on has one of its values."""
        return all(chosen.get(name, "") in values for name, values in self.when.items())

    def when_attrs(self) -> dict[str, str]:
        """The ``data-when-<switch>`` attributes the browser script hides inputs by."""
        return {f"data-when-{k}": " ".join(sorted(v)) for k, v in self.when.items()}


def when(**choices: str) -> dict[str, frozenset[str]]:
    """``when(type="sftp s3")`` → ``{"type": {"sftp", "s3"}}``."""
    return {k: frozenset(v.split()) for k, v in choices.items()}


def _convert(spec: Input, raw: str) -> Any:
    if spec.kind == "number":
        try:
            return spec.number(raw)
        except ValueError:
            return raw  # the API names the field and says it is not a number
    if spec.kind == "lines":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    return raw


def body_of(
    form: Mapping[str, Any], specs: Iterable[Input], switches: Iterable[str] = ()
) -> dict[str, Any]:
    """The API body of a submitted form: applicable, non-empty inputs, nested by their paths."""
    specs = list(specs)
    chosen = {name: str(form.get(name, "")).strip() for name in switches}
    body: dict[str, Any] = {}
    for spec in specs:
        if not spec.body or not spec.applies(chosen):
            continue
        if spec.kind == "checkbox":
            value: Any = form.get(spec.name) == "true"
        else:
            raw = form.get(spec.name)
            text = raw.strip() if isinstance(raw, str) and spec.kind != "textarea" else raw
            if not isinstance(text, str) or not text.strip():
                if spec.empty is None:
                    continue
                text = spec.empty
            value = _convert(spec, text)
        _put(body, spec.name.split("."), value)
    return body


def _put(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def values_of(data: Mapping[str, Any], specs: Iterable[Input]) -> dict[str, Any]:
    """The inputs' values from stored data (a model dumped as JSON); secrets stay empty."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.secret:
            continue
        node: Any = data
        for part in spec.name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            continue
        if spec.kind == "lines" and isinstance(node, list | tuple):
            node = "\n".join(str(v) for v in node)
        out[spec.name] = node
    return out


def submitted(form: Mapping[str, Any], specs: Iterable[Input]) -> dict[str, Any]:
    """What was typed, to show the form again (secrets are not echoed back)."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.secret:
            continue
        value = form.get(spec.name)
        if spec.kind == "checkbox":
            out[spec.name] = value == "true"
        elif isinstance(value, str):
            out[spec.name] = value
    return out
