"""tools package (see ../shared/DESIGN.md)."""
