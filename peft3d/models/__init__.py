"""Shared model parts: point tokenizer, positional encodings, head, and the assembled PointModel."""
