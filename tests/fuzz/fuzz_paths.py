"""Fuzz path safety: ``connectors.paths.normalize``, ``is_safe_name`` and ``join``.

Properties: :func:`invariants.check_paths` (a normal path has no empty, ``.`` or ``..``
component, no leading ``/`` and no NUL; ``join`` never leaves the root).
"""

from __future__ import annotations

from atheris.import_hook import instrument_imports

with instrument_imports(include=["connectors"]):
    import connectors.paths  # noqa: F401 - instrumented here, called through invariants

from runner import fuzz_main

SEEDS = [
    "2026-11-20_conversations.csv",
    "chats/CHAT-2001.json",
    "./a//b/",
    "a/./b/../c",
    "../etc/passwd",
    "/etc/passwd",
    "..",
    "...",
    "a\x00b",
    "recordings/call-ü.wav",
]

if __name__ == "__main__":
    fuzz_main("paths", [s.encode() for s in SEEDS])
