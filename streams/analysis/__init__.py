"""Quality analysis: per-tenant profiles of weighted parameters, each judged by a rule."""
