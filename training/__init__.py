"""Supervised fine-tuning between rounds: Ray Train + transformers' Trainer + DeepSpeed ZeRO-3."""
