"""GPU-hours of a Self-Lengthen run, estimated from its config and stated assumptions.

`estimate(settings)` gives, per round, the tokens the served models generate and read
(prefill) and the tokens the training steps go through, the GPU-hours each takes at the
assumed throughputs, and the wall-clock time on the config's GPUs. Nothing here is measured:
every number follows from the config and from ASSUMPTIONS, which say where they come from.
`python -m bench.gpu_hours` prints it; docs/runbook.md quotes it for the qwen2 config.
"""

from __future__ import annotations

from cluster.capacity.demand import served_deployments
from cluster.settings import Settings

ASSUMPTIONS: dict[str, float] = {
    # Lengths. English text; Qwen2's tokenizer writes ~1.3 tokens per English word.
    "tokens_per_word": 1.3,
    "instruction_tokens": 150,  # an instruction with the chat template around it
    "template_tokens": 300,  # the extension prompts' own wording
    "round1_draft_words": 1000,  # Qwen2-7B-Instruct's usual answer to a long-form request
    "extension_growth": 1.8,  # a kept extension vs its draft (the rule keeps only > 1.2x; 3 micro-steps)
    "draft_growth_per_round": 1.6,  # next round's drafts vs this round's: the Generator learns part of it
    # Retries and filters.
    "draft_attempts_mean": 1.3,  # tries per draft until it passes the quality rules
    "extension_attempts_mean": 1.5,  # tries per extension until it is > 1.2x its draft
    "length_biased_keep": 0.6,  # share kept by each length-biased sampling (the method's ~60%)
    "probe_instructions": 100,
    # One micro-step of the two-stage extension of a text of T tokens: stage 1 rewrites the
    # first half enriched (~0.5 T x 1.4), stage 2 continues after the kept 2/3 of that.
    "stage1_output": 0.7,
    "stage2_output": 0.6,
    # Throughput per GPU, for an 80 GB A100/H100 in bf16:
    # - vLLM 0.29 decoding a 7B model with a LoRA adapter at ~60 concurrent long sequences
    #   (what ~55 GB of KV cache holds at 16k tokens each), ~35 tokens/s each;
    "decode_tokens_per_s_per_gpu": 2000,
    "prefill_tokens_per_s_per_gpu": 20000,
    # - LoRA on ZeRO-3 with 16k-token packs and gradient checkpointing: ~6N FLOPs a token
    #   (forward, recompute, backward to the activations) at 30% of 989 TFLOPs gives ~6,500
    #   tokens/s; halved for ZeRO-3's parameter gathers and the attention over long packs.
    "train_tokens_per_s_per_gpu": 3000,
    "serving_busy": 0.7,  # share of the serving GPUs' time spent decoding (ramp-up, a round's tail)
    "serve_start_minutes": 5,  # per deploy and serving GPU: model from S3, vLLM start
    "train_start_minutes": 10,  # per role and round, on every training GPU: load, ZeRO-3 init, export
}


def estimate(settings: Settings, assumptions: dict[str, float] | None = None, instructions: int | None = None) -> dict:
    a = {**ASSUMPTIONS, **(assumptions or {})}
    syn, method, t = settings.synthesis, settings.synthesis.method, settings.training
    n = instructions or syn.instructions_per_round
    if n is None:
        raise ValueError("synthesis.instructions_per_round is unset (every seed): give --instructions")
    cap = syn.decoding.max_tokens or t.cutoff_len  # no answer is longer than max_tokens
    served = served_deployments(settings).values()
    serving_gpus = int(sum(role.max_replicas * role.resources.get("GPU", 0) for role in served))
    training_gpus = int(t.num_workers * t.resources_per_worker.get("GPU", 1 if t.use_gpu else 0))
    if not serving_gpus or not training_gpus:
        raise ValueError("this estimate is for GPU runs: give the served roles and the training workers GPUs")
    roles = 1 if method.control else 2

    rounds, draft = [], a["round1_draft_words"] * a["tokens_per_word"]
    for k in range(1, settings.run.rounds + 1):
        draft = min(draft, cap)
        extended = min(draft * a["extension_growth"], cap)
        # drafts
        draft_calls = n * method.responses_per_instruction * a["draft_attempts_mean"]
        decode = draft_calls * draft
        prefill = draft_calls * a["instruction_tokens"]
        # extensions: each try runs every micro-step; the text grows geometrically to `extended`
        kept_drafts = n * method.responses_per_instruction * a["length_biased_keep"]
        tries = kept_drafts * method.extensions_per_draft * a["extension_attempts_mean"]
        for step in range(method.extension_steps):
            text = draft * (extended / draft) ** (step / method.extension_steps)
            stage1 = min(a["stage1_output"] * text, cap)
            stage2 = min(a["stage2_output"] * text, cap)
            decode += tries * (stage1 + stage2)
            prefill += tries * (0.5 * text + text + method.stage1_keep * stage1 + 2 * a["template_tokens"])
        decode += a["probe_instructions"] * draft
        # training: both roles, every example `epochs` times, none longer than cutoff_len
        examples = kept_drafts * method.extensions_per_draft * a["length_biased_keep"]
        generator_example = min(a["instruction_tokens"] + extended, t.cutoff_len)
        extender_example = min(a["instruction_tokens"] + a["template_tokens"]
                               + method.extender_line_keep * draft + extended, t.cutoff_len)
        trained = examples * (generator_example + (extender_example if roles == 2 else 0)) * t.epochs

        generation = (decode / a["decode_tokens_per_s_per_gpu"] + prefill / a["prefill_tokens_per_s_per_gpu"]) \
            / 3600 / a["serving_busy"]
        training = trained / a["train_tokens_per_s_per_gpu"] / 3600
        startup = (serving_gpus * a["serve_start_minutes"] + roles * training_gpus * a["train_start_minutes"]) / 60
        startup_hours = (a["serve_start_minutes"] + roles * a["train_start_minutes"]) / 60
        rounds.append({
            "round": k,
            "instructions": n,
            "draft_tokens": round(draft),
            "extended_tokens": round(extended),
            "sft_examples_per_role": round(examples),
            "generated_tokens": round(decode),
            "prefill_tokens": round(prefill),
            "trained_tokens": round(trained),
            "gpu_hours": {"generation": round(generation, 1), "training": round(training, 1),
                          "startup": round(startup, 1)},
            "wall_clock_hours": round(generation / serving_gpus + training / training_gpus + startup_hours, 1),
        })
        draft *= a["draft_growth_per_round"]

    def total(key: str) -> float:
        return round(sum(r["gpu_hours"][key] for r in rounds), 1)

    gpu_hours = {key: total(key) for key in ("generation", "training", "startup")}
    gpu_hours["total"] = round(sum(gpu_hours.values()), 1)
    return {
        "gpus": {"serving": serving_gpus, "training": training_gpus},
        "rounds": rounds,
        "total": {
            "generated_tokens": sum(r["generated_tokens"] for r in rounds),
            "trained_tokens": sum(r["trained_tokens"] for r in rounds),
            "gpu_hours": gpu_hours,
            "wall_clock_hours": round(sum(r["wall_clock_hours"] for r in rounds), 1),
        },
        "assumptions": a,
    }
