"""interplay: a runtime for dual-model real-time assistants.

This package is the thin public face: the CLI (`interplay …`), settings, logging setup and
the generated wire code (`interplay.v1`). Importing it imports nothing heavy.
"""

__version__ = "0.1.0"
