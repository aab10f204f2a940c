"""Ears: what the user says becomes words, beside the turn loop and never on it (see contract.py)."""
