"""A byte-level BPE tokenizer for the tiny model, trained locally with `tokenizers`.

transformers 5 rebuilds a Qwen2 tokenizer's normalizer and pre-tokenizer (NFC, the Qwen2 split
regex, ByteLevel without its own regex) and ignores the ones in tokenizer.json, so the saved
tokenizer uses exactly that pipeline: ids then match between `tokenizers`, transformers and vLLM.

One difference during TRAINING only: the Qwen2 regex keeps punctuation and the newlines after it
in one piece (".\\n\\n"), so BPE would learn tokens like ".\\n\\n". The method pre-fills an
assistant turn with a text that ends on "." and lets the model go on with "\\n\\n" (stage 2 of the
extension); with such merges the model would only ever have seen "." at the END of a reply, and
would stop. Training on a split that cuts newlines off punctuation means no merge spans them,
so "A.\\n\\nB." encodes as ["A", ".", "\\n\\n", "B", "."] under the real pipeline too.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# The pre-tokenizer regex transformers 5 uses for Qwen2 (transformers/models/qwen2/tokenization_qwen2.py).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The same with the trailing newlines of a punctuation run removed (used to train merges only).
TRAIN_SPLIT = QWEN2_SPLIT.replace(r"[^\s\p{L}\p{N}]+[\r\n]*", r"[^\s\p{L}\p{N}]+")

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# ChatML without a default system prompt. transformers (and vLLM, which uses it) implement
# continue_final_message by cutting the rendered text after the last message's content.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def pre_tokenizer(split: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizer(TRAIN_SPLIT)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.pre_tokenizer = pre_tokenizer(QWEN2_SPLIT)
    return tokenizer


def wrap(tokenizer: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        padding_side="left",
        model_max_length=max_length,
        chat_template=CHAT_TEMPLATE,
    )


def training_texts(conversations: Iterable[list[dict]]) -> Iterable[str]:
    """The text the BPE trainer sees: every message, with its role header."""
    for messages in conversations:
        for message in messages:
            yield f"{message['role']}\n{message['content']}"
