"""The case store: one case per conversation, versioned, written idempotently."""
