"""The console's sections, one module each, in the order the navigation lists them."""

from __future__ import annotations

from streams.console.core import Pages
from streams.console.pages import executions, imports, jobs

SECTIONS: list[Pages] = [imports.pages, jobs.pages, executions.pages]
