"""The toy world and the tiny Qwen2-style model built from it on CPU: the model of the embedded
default (configs/tiny.yaml), in whose world Self-Lengthen's effect is visible. It answers in
2-4 sentences and can extend a text in the method's prompt format.

    world.py      topics, sentence templates and instruction phrasings (English and Chinese)
    corpus.py     training conversations rendered with the method's own prompt templates
    tokenizer.py  the byte-level BPE tokenizer and its chat template
    build.py      corpus -> tokenizer -> random init -> train -> save (`python -m toyworld build`)

method_vs_control.py is an experiment on the built model (method against control in one
process), not part of the build: changing it does not rebuild models/tiny.
"""
