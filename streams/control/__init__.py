"""Control-plane state: tenants, API keys, connectors, schemas, audit (one module each)."""
