"""Long-output benchmarks and their scores, in plain Python (no Ray): LongBench-Write,
LongWrite-Ruler and LonGen, each one file behind one small protocol (`benchmark.Benchmark`):
how its rows are checked, what a row asks the model, how an answer is scored, how the scores
sum up, and how its table reads.

    benchmark.py        the protocol (and the judge's rubric a benchmark may carry)
    longbench_write.py  LongBench-Write: S_l per bucket, S_q from the judge, S
    longwrite_ruler.py  LongWrite-Ruler: words produced per required length
    longen.py           LonGen: length score per type / range / language, judged quality
    registry.py         name -> benchmark (the names settings and --benchmark accept)
    rows.py             benchmark and responses files: parsed, bad lines set aside with a reason
    generation.py       asking a model every row, with a checkpoint a rerun picks up
    judging.py          the judge's prompt, its verdicts (parsed or set aside), quality means
    scoring.py          one benchmark scored end to end; the short forms summaries print
    outputs.py          respond / score: the above, with every file written to an output folder
    tables.py, plots.py the Markdown tables and the produced-vs-required plot

Adding a benchmark is one file here (a class with the protocol's fields and methods) plus its
entry in registry.py; the evaluate job, the settings and the report ask the protocol.

Layering: this package sits beside longform/ and imports only longform/; jobs/, actors/ and
cluster/ may import it. Folders to write to are duck-typed (`outputs.Folder`), so a local path
or S3 (cluster.storage.Storage) both work without this package knowing either.
"""
