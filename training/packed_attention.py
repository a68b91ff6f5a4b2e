"""Attention for packed rows that costs what the samples in them cost.

A packed row holds several samples end to end; `position_ids` restart at each one, and a
sample must not see the others. transformers' `sdpa` attention says so with a block-diagonal
mask over the whole row: every row pays for a row_len x row_len attention (2,048^2 on the tiny
configs), and an explicit mask keeps SDPA off its fused causal kernel. Here each sample is a
causal attention of its own: the same result (tests compare them), at the cost of the samples'
own lengths. On the tiny model's final SFT (rows of 2,048) a ZeRO-3 step took ~1.0 s before and
~0.5 s after (bench/RESULTS.md).

    model.set_attn_implementation(register())

The saved config does not name it (transformers does not write the attention implementation),
so an exported model loads with the default attention.

Registered only as an attention function, not as a mask function, so transformers builds no
mask for it: a batch must carry `position_ids` (packed rows do) and no padding on the left.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

PACKED = "packed_sdpa"


def segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each sample in one row: a sample starts where the position does not
    follow the one before (transformers' own rule, `find_packed_sequence_indices`)."""
    starts = torch.nonzero(position_ids[1:] != position_ids[:-1] + 1).flatten().add(1).tolist()
    bounds = [0, *starts, position_ids.shape[0]]
    return list(zip(bounds, bounds[1:]))


def packed_sdpa(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """query [batch, heads, seq, dim], key and value [batch, kv_heads, seq, dim] ->
    ([batch, seq, heads, dim], None), as `sdpa_attention_forward` returns."""
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        # not a packed training batch (a mask, no positions, a KV cache): plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = []
    for b in range(query.shape[0]):
        pieces = [sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                         value[b:b + 1, :, s:e], None, **kwargs)[0]
                  for s, e in segments(position_ids[b if position_ids.shape[0] > 1 else 0])]
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0), None


def register() -> str:
    AttentionInterface.register(PACKED, packed_sdpa)
    return PACKED
