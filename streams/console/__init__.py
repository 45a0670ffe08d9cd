"""The web console at ``/console``: server-rendered pages over the ``/v1`` API.

``app.py`` serves it (sign-in, sign-out, static files); ``core.py`` is what every page stands
on (session, CSRF, calling the API in process, rendering); ``forms.py`` maps forms to API
bodies; ``pages/`` holds one module per section; ``templates/`` and ``static/`` (htmx, vendored
with its licence; the console's CSS and script) are data.
"""
