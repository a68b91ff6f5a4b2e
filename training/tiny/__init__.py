"""A tiny Qwen2-style model built from code on CPU, with a toy world in which Self-Lengthen's
effect is visible: it answers in 2-4 sentences and can extend a text in the method's prompt format."""
