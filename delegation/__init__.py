"""delegation package (see ../shared/DESIGN.md)."""
