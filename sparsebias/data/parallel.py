"""Chunks of work on every core (a fork pool), and a lock for what several processes may build at once."""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path


def run_chunks(fn, jobs: list, workers: int, progress=None) -> None:
    """Call fn(job) for every job, in `workers` processes when more than one; fn returns how
    many items it did, which is passed to progress.

    Forked processes, so that fn needs no import guard in the caller's script; but only from a
    process that runs no other Python thread (pytest-xdist's, a notebook's, a Ray worker's):
    a fork copies any lock such a thread holds, and the child can wait on it forever.
    """
    if workers > 1 and len(jobs) > 1 and threading.active_count() == 1:
        with get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for done in pool.imap_unordered(fn, jobs):
                if progress:
                    progress(done)
        return
    for job in jobs:
        done = fn(job)
        if progress:
            progress(done)


@contextmanager
def build_lock(target: Path):
    """Hold an exclusive lock for building `target`, so that processes started together
    (a sweep's runs) build it once: the others wait, then find it built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
