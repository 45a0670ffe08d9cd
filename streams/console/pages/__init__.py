"""The console's sections, one module each, in the order the navigation lists them."""

from __future__ import annotations

from streams.console.core import Pages
from streams.console.pages import executions, exports, files, imports, jobs, keys, results, tenants

SECTIONS: list[Pages] = [
    tenants.pages,
    imports.pages,
    exports.pages,
    keys.pages,
    jobs.pages,
    executions.pages,
    results.pages,
    files.pages,
]
