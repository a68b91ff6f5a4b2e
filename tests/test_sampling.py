import os
import random
import subprocess
import sys
from pathlib import Path

from longform.sampling import length_biased_sample, seeded_rng


def test_keeps_about_sixty_percent_and_drops_the_short_tail():
    items = list(range(1, 10_001))
    random.Random(1).shuffle(items)
    kept, dropped = length_biased_sample(items, lambda x: x, random.Random(7))
    assert len(kept) + len(dropped) == len(items)
    # E[keep] = integral over r in (0,1] of 1 - 2 r^3 where positive ~= 0.595
    assert 0.57 < len(kept) / len(items) < 0.62
    shortest = set(range(1, 2001))  # rank > 0.8: 2 r^3 > 1, never kept
    assert not shortest & set(kept)
    longest = set(range(9001, 10_001))  # rank < 0.1: kept with p > 0.998
    assert len(longest & set(kept)) > 990


def test_ties_take_their_first_position():
    kept, dropped = length_biased_sample([5, 5, 5, 5], lambda x: x, random.Random(0))
    assert kept == [] and len(dropped) == 4  # all rank 1 -> keep needs uniform() > 2


def test_seeded_and_deterministic():
    items = list(range(200))
    a = length_biased_sample(items, lambda x: x, seeded_rng(0, 1, "shard-00000", "drafts"))
    b = length_biased_sample(items, lambda x: x, seeded_rng(0, 1, "shard-00000", "drafts"))
    c = length_biased_sample(items, lambda x: x, seeded_rng(1, 1, "shard-00000", "drafts"))
    assert a == b
    assert a != c


def test_the_draws_are_the_same_in_another_process():
    """A resumed job is a new process, with its own str hash salt: its seeds must not use hash()."""
    code = ("from longform.params import stable_seed; from longform.sampling import seeded_rng; "
            "print(stable_seed(0, 'en-001', 'd0'), seeded_rng(0, 1, 'shard-00000', 'drafts').random())")
    repo = Path(__file__).resolve().parents[1]
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": salt}).stdout for salt in ("1", "2")}
    from longform.params import stable_seed

    here = f"{stable_seed(0, 'en-001', 'd0')} {seeded_rng(0, 1, 'shard-00000', 'drafts').random()}\n"
    assert outputs == {here}
