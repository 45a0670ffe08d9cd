"""HTTP endpoints: one module per resource, assembled by :func:`streams.api.app.create_app`."""
