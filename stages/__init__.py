"""The stages of a run, one file each, on a `runtime.context.RunContext`:

    self_instruct   the Generator grows the instruction pool; the judge keeps what needs a long answer
    probe           the fixed probe set and the length-constrained probe set
    round           a round's synthesis (through actors/synthesis.py) and the training of each role
    collect         the final data: long answers given length constraints they satisfy
    benchmarks      evaluation/'s benchmarks on the served Generator after a round (and the inputs
                    jobs.evaluate checks)
    final           after the last round: collect, give length constraints, train the final model, score
    preference      after the final SFT: DPO on pairs the run already holds

A new stage is a new file here: a function or class that takes the context, does its work
through `ctx.stage(k, name, fn)` (so a stopped job resumes after it) and returns a summary dict.
The round's own synthesis fans out through `actors` (Ray Data), training through `training/`.
"""
