"""Format readers: CSV/TSV (`delimited`), JSONL (`jsonl`) and Parquet (`parquet`), each
giving headers and raw batches of text columns; `events` streams a file's events whatever
its format. They know formats, not layouts: a layout says which columns mean what."""
