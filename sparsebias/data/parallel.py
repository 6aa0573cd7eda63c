"""Chunks of work on every core (a fork pool), with a progress callback per finished chunk."""

from __future__ import annotations

from multiprocessing import get_context


def run_chunks(fn, jobs: list, workers: int, progress=None) -> None:
    """Call fn(job) for every job, in `workers` processes when more than one; fn returns how
    many items it did, which is passed to progress."""
    if workers > 1 and len(jobs) > 1:
        with get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for done in pool.imap_unordered(fn, jobs):
                if progress:
                    progress(done)
        return
    for job in jobs:
        done = fn(job)
        if progress:
            progress(done)
