"""The cascade interaction backend: VAD endpointing → speech recognition → reply model → TTS (backend.py)."""
