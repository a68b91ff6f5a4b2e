"""What every job needs around the method, built once per run (`runtime.context.RunContext`):
settings checked before the cluster, Ray joined and sized, the run folder, the served models,
clients for them and the judge, resumable stages, and the job's own log lines.

Layers, each importing only those below it:

    jobs/       entry points (`python -m jobs.<name>`, what `ray job submit` runs)
    stages/     one file per stage of the loop (self-instruct, probes, collect, final, preference, ...)
    runtime/    the run context, the pre-connect checks and the job's log lines
    actors/     Ray actors and the serving / client glue; training/  Ray Train + DeepSpeed
    cluster/    settings, storage, layout, Ray connection, capacity
    reports/    the run's summary table and report (Markdown, figures)
    evaluation/ the long-output benchmarks, pure Python, one file each
    longform/   the method, pure Python
"""
