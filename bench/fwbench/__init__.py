"""FastWorker benchmark suite internals (entry point: bench/run.py)."""
