"""Tokenization with assistant-only labels, and packing that keeps samples apart."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.packed_attention import register as register_packed, segments
from training.sft_data import IGNORE, PackedRows, encode, encode_all, pack, pad_batch, stack_rows

CHAT = [{"role": "user", "content": "Write about bees."},
        {"role": "assistant", "content": "Bees make honey.\n\nThey dance."}]


def test_labels_cover_the_answer_and_its_end_of_turn_only(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    sample = encode(CHAT, tok)
    answer = [t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE]
    assert tok.decode(answer).startswith("Bees make honey.\n\nThey dance.<|im_end|>")
    prompt = [t for t, label in zip(sample.input_ids, sample.labels) if label == IGNORE]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    assert sample.labels[: len(prompt)] == [IGNORE] * len(prompt)


def test_over_length_policy_skips_or_truncates_and_counts(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    long = [{"role": "user", "content": "Go."}, {"role": "assistant", "content": "word " * 400}]
    examples = [{"messages": CHAT}, {"messages": long}]
    kept, counts = encode_all(examples, tok, cutoff_len=64, over_length="skip")
    assert len(kept) == 1 and counts["over_length_skipped"] == 1
    kept, counts = encode_all(examples, tok, cutoff_len=64, over_length="truncate")
    assert len(kept) == 2 and max(len(s) for s in kept) == 64 and counts["over_length_truncated"] == 1


def test_packing_first_fit_fills_rows_without_exceeding_them(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    samples = [encode([CHAT[0], {"role": "assistant", "content": "Bees. " * n}], tok) for n in range(1, 20)]
    rows = pack(samples, 128)
    assert sorted(id(s) for row in rows for s in row) == sorted(id(s) for s in samples)
    assert all(sum(len(s) for s in row) <= 128 for row in rows)
    assert len(rows) <= sum(len(s) for s in samples) // 128 + 2
    with pytest.raises(ValueError, match="does not fit"):
        pack(samples, 8)


def test_packed_loss_of_each_sample_equals_its_loss_alone(tiny_model):
    """Position ids restart per sample and no attention mask is passed, so transformers
    builds a block-diagonal mask: a sample's loss does not depend on its row-mates."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    model.config.use_cache = False  # as in training (training/worker.py): a cache disables the mask
    answers = ["Bees make honey.", "Rain falls on the hills.\n\nRivers fill.", "蜜蜂会跳舞。"]
    samples = [encode([CHAT[0], {"role": "assistant", "content": a}], tok) for a in answers]
    (row,) = pack(samples, 256)
    batch = stack_rows([PackedRows([row], 256, tok.pad_token_id)[0]])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for sample in row:  # in packed order
            end = start + len(sample)
            packed = token_losses(logits[start:end], torch.tensor(sample.labels))
            alone_logits = model(input_ids=torch.tensor([sample.input_ids])).logits[0]
            alone = token_losses(alone_logits, torch.tensor(sample.labels))
            torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)
            start = end
        # and a row-mate DOES change the loss when samples are not kept apart
        mixed = model(input_ids=batch["input_ids"]).logits[0]
        last = row[-1]
        assert not torch.allclose(token_losses(mixed[start - len(last):start], torch.tensor(last.labels)),
                                  token_losses(model(input_ids=torch.tensor([last.input_ids])).logits[0],
                                               torch.tensor(last.labels)), atol=1e-4)


def test_packed_attention_segments_start_where_positions_restart():
    assert segments(torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])) == [(0, 3), (3, 5), (5, 9)]
    assert segments(torch.tensor([0, 1, 2, 3])) == [(0, 4)]
    assert segments(torch.tensor([0, 1, 0, 0])) == [(0, 2), (2, 3), (3, 4)]


def test_packed_attention_equals_the_block_diagonal_mask_in_logits_and_gradients(tiny_model):
    """training/packed_attention.py attends within each sample on its own; transformers' sdpa
    builds a block-diagonal mask over the row. Two rows packed differently, padding tail
    included: same logits, same gradients."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.config.use_cache = False
    answers = ["Bees make honey.", "Rain falls on the hills.\n\nRivers fill.", "蜜蜂会跳舞。", "Go. " * 30]
    samples = [encode([CHAT[0], {"role": "assistant", "content": a}], tok) for a in answers]
    rows = [PackedRows([row], 192, tok.pad_token_id)[0] for row in (samples[:3], samples[3:] + samples[:1])]
    batch = stack_rows(rows)

    def forward_backward(attention: str):
        model.set_attn_implementation(attention)
        model.zero_grad()
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"])
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    masked_logits, masked_grads = forward_backward("sdpa")
    packed_logits, packed_grads = forward_backward(register_packed())
    assert len(segments(batch["position_ids"][0])) == 4  # three samples and the padding tail
    torch.testing.assert_close(packed_logits, masked_logits, rtol=1e-4, atol=1e-4)
    for name, grad in masked_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    # no positions (a plain batch, e.g. the export's check): ordinary causal attention
    plain = model(input_ids=batch["input_ids"]).logits
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(plain, model(input_ids=batch["input_ids"]).logits)


def token_losses(logits, labels):
    shift_logits, shift_labels = logits[:-1], labels[1:]
    keep = shift_labels != IGNORE
    return torch.nn.functional.cross_entropy(shift_logits[keep], shift_labels[keep], reduction="none")


def test_padding_mode_masks_the_padding(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    short, longer = encode(CHAT, tok), encode([CHAT[0], {"role": "assistant", "content": "Bees. " * 20}], tok)
    batch = pad_batch([short, longer], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(longer))
    assert batch["attention_mask"][0].sum() == len(short)
    assert (batch["labels"][0, len(short):] == IGNORE).all()
