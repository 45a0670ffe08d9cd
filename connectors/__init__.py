"""File-store connectors: list, detect complete files, stream them, clean up.

A leaf package: it never imports ``streams``, Kafka, Faust or fastavro. ``streams`` decides what
to publish and when to acknowledge; this package only does the I/O and the bookkeeping that is
the same for every store (see :mod:`connectors.poller`).
"""
