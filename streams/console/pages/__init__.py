"""The console's sections, one module each, in the order the navigation lists them."""

from __future__ import annotations

from streams.console.core import Pages
from streams.console.pages import exports, imports, keys, tenants

SECTIONS: list[Pages] = [tenants.pages, imports.pages, exports.pages, keys.pages]
