"""Where results go: results.json (the source of truth), metrics.jsonl, and the W&B mirror.

    results.py      results.json: schema, atomic writes, never overwrite a finished result
    launch.py       launch records: which launch of a sweep directory started each job
    sinks.py        the Sink protocol, metrics.jsonl, fan-out; `make_sinks(cfg, run_dir)`
    wandb_sink.py   the W&B run of a job
    wandb_reader.py reads an offline .wandb file back (tests, the report)
    history.py      a job's history as columns (metrics.arrow), read by the report
    wandb_keys.py   the key names a W&B run logged, cached per job (--wandb-dashboard)
    catalogue.py    the one list of figures: results.csv columns, titles, units, directions, W&B keys
"""
