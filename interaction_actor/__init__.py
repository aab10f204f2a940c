"""The interaction side, by lifecycle (see ../README.md, "Layout", and ../shared/DESIGN.md):

- `model/`: the interaction model and its streaming session — what a turn computes.
- `training/`: synthetic episodes, the trainer, the evaluation suite — how the model is made.
- `runtime/`: the InteractionBackend seam, the clocked loop, the Session service, the Ray actor —
  how sessions are served.

Imports point one way: runtime → model, training → model; the model imports neither.
"""
