"""Reports as files: Markdown with its pictures, rendered from a job's summary and the records
it wrote. Plain Python (matplotlib, no Ray); a folder to write to is anything with Storage's
methods (cluster.storage.Storage: a local folder or an S3 prefix).

    run.py         <run>/report.md of the Self-Lengthen loop (rounds, benchmarks, final stage)
    figures.py     its pictures: lengths per round, training loss, the probe set per round
    agentwrite.py  <run>/agentwrite/report.md of the AgentWrite job

The benchmark tables and plots are evaluation/'s (tables.py, plots.py): the same a single
evaluation writes (scores.md, lengths.png). Layering: beside longform/ and evaluation/, importing
only them; jobs/ renders through it (jobs/report.py re-renders a run from the command line).
"""
