"""`training.warmup_ratio` is a share of the run's optimizer steps, rounded to the nearest step.
transformers rounds a ratio up, and its linear warmup starts at a learning rate of 0, so a short
run lost a whole step: two steps with ratio 0.1 trained once, and a test of "the loss went down"
compared two losses of the same weights."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from training.worker import Arguments, warmup_steps


def test_warmup_is_the_ratio_of_steps_rounded_to_the_nearest():
    assert [warmup_steps(0.1, n) for n in (2, 4, 5, 12, 15, 100)] == [0, 0, 1, 1, 2, 10]
    assert warmup_steps(0.0, 50) == 0 and warmup_steps(0.5, 3) == 2


def test_a_short_run_learns_from_its_first_step(tmp_path):
    args = Arguments(output_dir=str(tmp_path), warmup_steps=0.1, learning_rate=1e-4, lr_scheduler_type="linear",
                     use_cpu=True, report_to=[])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=args.get_warmup_steps(2), num_training_steps=2)
    assert schedule.get_last_lr()[0] == 1e-4  # transformers' own ceil would give 1 warmup step: lr 0
    assert args.get_warmup_steps(20) == 2
