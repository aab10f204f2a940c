"""Serving: the InteractionBackend seam, the clocked micro-turn loop, input decoding, weaving
background updates, delegation, the Session gRPC service and the Ray actor.
"""
