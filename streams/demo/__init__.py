"""The demo tenant of the embedded local stack: sample files and a local-folder connector."""
