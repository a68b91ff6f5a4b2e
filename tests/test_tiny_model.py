"""The tiny model: tokenizer, chat template, config, saved folder, determinism, corpus.

Builds use a handful of steps: these tests check the plumbing, not what the model learned
(bench/tiny_world_check.py measures that)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from longform.extension import split_units
from longform.prompts import load_prompts
from longform.quality import check_quality
from longform.words import detect_language
from toyworld.__main__ import main as toyworld_main
from toyworld.build import BuildSpec, build, fast_bf16, pad_batch, token_mean_loss, tokenize_chat
from toyworld.corpus import (
    answer_example, extend_example, judge_example, sample_examples, self_instruct_example,
)
from toyworld.world import TEMPLATES, aspects, sentences

VLLM_CPU_HEAD_DIMS = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}
TEXTS = [
    "Write a detailed essay about tea.",
    "In Kyoto, a young teacher first wrote about tea at dusk.\n\nA museum in Oslo keeps ten old pictures of tea.",
    "请写一篇关于茶的详细文章。",
    "黄昏时分，杭州的老奶奶第一次写下了关于茶的文字。\n\n成都的一家博物馆收藏了十二张关于茶的老照片。",
    "Mixed 中文 and English, digits 2048 and punctuation: «¿?» ...\n\n\n  end",
]
FAST = BuildSpec(steps=4, tokenizer_examples=600, batch_tokens=2048, chunk_examples=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    toyworld_main(["build", str(out), "--steps", "6", "--no-probes"])
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_agree_between_tokenizers_and_transformers(tiny, tokenizer, text):
    raw = Tokenizer.from_file(str(tiny / "tokenizer.json")).encode(text).ids
    assert tokenizer.encode(text, add_special_tokens=False) == raw
    # transformers 5 rebuilds the pipeline for a Qwen2 tokenizer: the ids must not change
    assert Qwen2Tokenizer.from_pretrained(tiny).encode(text, add_special_tokens=False) == raw
    assert tokenizer.decode(raw) == text


def test_chinese_tokenizes_to_characters_or_words_not_bytes(tokenizer):
    text = "黄昏时分，杭州的老奶奶第一次写下了关于茶的文字。"
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= len(text)


def test_no_token_spans_punctuation_and_newline(tokenizer):
    """Stage 2 pre-fills a reply ending with '.' and the model continues with '\\n\\n': the
    tokens there must be the same as inside a whole text."""
    for text in ("Tea helped.\n\nMore tea.", "茶很好。\n\n还有茶。"):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))
        assert "ĊĊ" in tokens
        assert all(t == "ĊĊ" or "Ċ" not in t for t in tokens)


def test_chat_template_is_chatml(tokenizer):
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_continue_final_message_leaves_the_reply_open(tokenizer):
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "First part."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    assert rendered == "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nFirst part."


def test_config_fits_vllm_cpu(tiny, tokenizer):
    config = AutoConfig.from_pretrained(tiny)
    assert config.model_type == "qwen2"
    assert config.head_dim in VLLM_CPU_HEAD_DIMS
    assert config.hidden_size // config.num_attention_heads == config.head_dim
    assert config.tie_word_embeddings is False
    assert config.max_position_embeddings >= 2048
    assert config.vocab_size == len(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(tiny).eos_token_id == im_end
    assert tokenizer.eos_token == "<|im_end|>"
    assert (tiny / "model.safetensors").is_file()


def test_saved_folder_loads_and_generates(tiny, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": TEXTS[0]}], tokenize=False,
                                           add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_build_is_deterministic_for_a_seed(tmp_path):
    first = build(tmp_path / "a", FAST, probes=False)["weights_sha256"]
    again = build(tmp_path / "b", FAST, probes=False)["weights_sha256"]
    other = build(tmp_path / "c", BuildSpec(**{**FAST.__dict__, "seed": 1}), probes=False)["weights_sha256"]
    assert first == again
    assert first != other
    assert json.loads((tmp_path / "a" / "tokenizer.json").read_text()) == json.loads(
        (tmp_path / "b" / "tokenizer.json").read_text())


def test_the_build_computes_in_bf16_only_where_the_cpu_has_its_kernels(tiny, tokenizer, tmp_path):
    """Without oneDNN's bf16 kernels (an AVX2-only CPU) bf16 products take a reference path
    ~80x slower than fp32, and the build would take an hour: its loss's default follows
    `fast_bf16`, and the build records which it used."""
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    batch = pad_batch([tokenize_chat(tokenizer, {"messages": [
        {"role": "user", "content": TEXTS[0]}, {"role": "assistant", "content": TEXTS[1]}]})], tokenizer.pad_token_id)
    with torch.no_grad():
        fp32, bf16 = (float(token_mean_loss(model, batch, bf16=b)) for b in (False, True))
        default = float(token_mean_loss(model, batch))
    assert fp32 != bf16  # the two precisions are told apart by the loss
    assert default == (bf16 if fast_bf16() else fp32)
    assert not fast_bf16("meta")
    assert build(tmp_path, FAST, probes=False)["bf16_autocast"] == fast_bf16()


def examples(prompts):
    rng = random.Random(5)
    return [answer_example(rng, "en", 3), answer_example(rng, "zh", 4),
            extend_example(rng, "en", 5, prompts, 3), extend_example(rng, "zh", 6, prompts, 12),
            self_instruct_example(rng, "zh", prompts), judge_example(rng, "en", 7, prompts)]


def test_training_tokens_are_the_chat_templates(tokenizer):
    for example in examples(load_prompts()):
        ids, labels = tokenize_chat(tokenizer, example)
        rendered = tokenizer.apply_chat_template(example["messages"], tokenize=False)
        assert ids == tokenizer.encode(rendered, add_special_tokens=False)
        trained = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
        assert trained == example["messages"][1]["content"] + "<|im_end|>"


def draft_of(example: dict, lang: str, prompts) -> list[str]:
    """The units of the text an extend prompt carries (after the template's last label)."""
    label = prompts.texts[lang]["extend"].split("{text}")[0].strip().splitlines()[-1]
    return split_units(example["messages"][0]["content"].rsplit(label, 1)[1])


def test_extend_examples_keep_every_unit_and_add_one_after_each():
    prompts = load_prompts()
    rng = random.Random(0)
    for lang, k, half in (("en", 1, False), ("en", 5, False), ("zh", 12, False), ("en", 9, True)):
        example = extend_example(rng, lang, 9, prompts, k, first_half=half)
        units = draft_of(example, lang, prompts)
        target = example["messages"][1]["content"].split("\n\n")
        assert len(units) == (k // 2 if half else k)
        assert len(target) == 2 * len(units)
        assert target[0::2] == units
        assert not set(target[1::2]) & set(units)


def test_corpus_texts_pass_the_quality_rules():
    prompts = load_prompts()
    for example in sample_examples(3, 300, prompts, task="extend") + sample_examples(3, 300, prompts, "answer"):
        assert check_quality(example["messages"][1]["content"]) is None


def test_texts_walk_forward_through_distinct_aspects_of_their_topic():
    rng = random.Random(1)
    for n in (1, 2, 7, len(TEMPLATES["zh"])):
        which = aspects(rng, "zh", n)
        assert which == sorted(set(which)) and len(which) == n
        assert all("茶" in s for s in sentences(rng, "zh", 0, which))
    with pytest.raises(ValueError):
        aspects(rng, "en", len(TEMPLATES["en"]) + 1)


def test_answers_are_two_to_four_sentences_in_the_instructions_language():
    prompts = load_prompts()
    for example in sample_examples(4, 200, prompts, task="answer"):
        reply = example["messages"][1]["content"]
        assert 2 <= len(reply.split("\n\n")) <= 4
        assert detect_language(reply) == detect_language(example["messages"][0]["content"])
