"""The Self-Lengthen and AgentWrite methods as plain Python.

Nothing here imports Ray: every rule is a small function that can be read and tested on its
own. Model calls go through the `ChatModel` protocol (see `longform.model`), so the same code
runs against a served model, an external OpenAI-compatible endpoint, or a scripted test model.
"""
