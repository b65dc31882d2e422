"""Running a batch: every question of a set over seeds, on a pool of workers.

run.py (the coordinator, the only writer of the batch folder), workers.py (this
process, or N worker processes), raycluster.py (Ray actors, only with --ray),
pools.py (which pool, and each worker's share of the machine). Reading a batch
(score, compare, quality) is research/, which never imports this package: the
batch index's format is research/batchindex.py, read by both.
"""
