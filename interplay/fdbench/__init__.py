"""`interplay eval fdbench`: a Full-Duplex-Bench-style evaluation of interaction backends over the real
Session gRPC stream, scored from the audio that came out (episodes.py, stream.py, scoring.py, run.py)."""
