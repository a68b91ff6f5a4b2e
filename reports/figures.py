"""The run report's pictures, as PNG bytes."""

from __future__ import annotations

from evaluation.plots import plt, png


def lengths_figure(k: int, drafts: list[int], extended: list[int]) -> bytes:
    """Words of the drafts that passed the rules and of the extensions kept in round `k`."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = 30
    top = max(drafts + extended + [1])
    ax.hist(drafts, bins=bins, range=(0, top), alpha=0.6, label=f"drafts (n={len(drafts)})")
    ax.hist(extended, bins=bins, range=(0, top), alpha=0.6, label=f"extended, kept (n={len(extended)})")
    ax.set(title=f"Round {k}: response length", xlabel="words", ylabel="responses")
    ax.legend()
    return png(fig)


def loss_figure(k: int, training: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for role, result in training.items():
        history = result.get("loss_history") or []
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".", label=role)
    ax.set(title=f"Round {k}: training loss", xlabel="optimizer step", ylabel="loss")
    ax.legend()
    return png(fig)


def probe_figure(summary: dict) -> bytes:
    rounds = summary["rounds"]
    base = summary.get("probe_base") or (rounds[0]["probe_before"] if rounds else {})
    xs = [0] + [r["round"] for r in rounds]
    words = [base.get("mean_words", 0)] + [r["probe_after"]["mean_words"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(xs, words, marker="o")
    ax.set(title="Generator on the probe set", xlabel="round (0 = base model)", ylabel="mean words", xticks=xs)
    return png(fig)


def words_figure(words: list[int]) -> bytes:
    """AgentWrite: words per written sample."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(words, bins=30, range=(0, max(words + [1])))
    ax.set(title=f"AgentWrite: words per written sample (n={len(words)})", xlabel="words", ylabel="samples")
    return png(fig)
