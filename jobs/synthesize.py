"""Moved to actors/synthesis.py (the round's shard worker) on actors/shards.py (the one shard
fan-out). These names stay importable from here only until their last users import them from
actors.synthesis; then this file goes."""

from actors.synthesis import (  # noqa: F401
    RoundPlan,
    ShardWorker,
    run_synthesis,
    select_instructions,
    sft_files,
    write_instruction_shards,
)
