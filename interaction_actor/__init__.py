"""interaction_actor package (see ../shared/DESIGN.md)."""
