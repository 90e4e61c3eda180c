"""Episodic memory by fast learning: a temporal LoRA trained on what was just generated."""
