"""The interaction model: featurizers (dMel audio, hMLP patches, byte text), the turn layout, the
early-fusion transformer and its heads, the vocoder, and the streaming session that steps it
turn by turn. Knows nothing of clocks, gRPC or training.
"""
