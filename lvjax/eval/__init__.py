"""Benchmark evaluation: tasks in the benchmarks' own formats, the originals' prompts and parsers.

    records    annotation files (JSON / JSONL / parquet / Charades-STA text, or a folder of them)
    tasks      each benchmark's items and, per protocol, prompt and answer rule
    parsers    the originals' answer parsers
    subtitles  Video-MME / LongVideoBench subtitle files and each original's choice of lines
    summary    overall and per-group scores, the table, atomic writes
    runner     the resumable, data-parallel loop behind `lvjax eval`
    synthetic  `lvjax make-benchmark <task>`: tiny benchmarks in each format (render: their videos)
    niah       needle-in-a-haystack generator and heatmap
    lmms       the lmms-eval model plugin (`lmms-eval --model lvjax`)
"""
