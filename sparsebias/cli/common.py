"""What every command shares: user errors as one line and exit 2, signals, shared options."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from contextlib import contextmanager

import click

from ..core.errors import SparsebiasError, first_line

EXIT_USER_ERROR = 2


class Group(click.Group):
    """Turns a user error into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, functools.partial(_terminated, os.getpid()))
        try:
            return super().invoke(ctx)
        except SparsebiasError as e:
            click.echo("error: " + " ".join(str(e).strip().splitlines()), err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as e:
            click.echo("interrupted; nothing half-written was kept (compress: rerun with --resume; "
                       "sweep: rerun the same command)", err=True)
            sys.exit(128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT))
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except MemoryError as e:  # numpy names the array it could not allocate
            click.echo(f"error: out of memory: {first_line(e)}; try a smaller batch size, image size or data set; "
                       "nothing half-written was kept", err=True)
            sys.exit(EXIT_USER_ERROR)
        except OSError as e:  # a read-only or full disk, a folder where a file should be: name it
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or first_line(e)}; nothing half-written was kept", err=True)
            sys.exit(EXIT_USER_ERROR)
        except Exception as e:
            # Exit 1 means "the gate failed" or "predict skipped images"; a crash must never read as either.
            if os.environ.get("SPARSEBIAS_DEBUG"):
                raise
            click.echo(f"error: unexpected {type(e).__name__}: {first_line(e)} (a sparsebias bug, or input it "
                       "failed to check: please report it; SPARSEBIAS_DEBUG=1 shows the traceback)", err=True)
            sys.exit(EXIT_USER_ERROR)


def _terminated(main_pid, signum, frame):
    """SIGTERM (a scheduler's pre-emption, `kill`) unwinds like Ctrl-C: staged files are removed,
    and an interrupted compress resumes from its last completed epoch. Forked workers (image
    decoding) die as they would have: their pool's parent cleans up."""
    if os.getpid() != main_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    raise KeyboardInterrupt(signum)


TRUSTED_KEY = click.option(
    "--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
    help="Ed25519 public key (PEM); the bundle (and a reference) must be signed by it. Repeatable.")


def replay_options(command):
    """--data, --engine and --stored-logits: how audit and gate check what a bundle's model does."""
    for option in reversed([
        click.option("--data", "replay_data", default=None,
                     help="Data set to re-run the models on (as compress --data; default: each manifest's own)."),
        click.option("--engine", "replay_engine", default="onnxruntime", show_default=True,
                     help="Engine that re-runs model.onnx on the judged images (onnxruntime is on every machine)."),
        click.option("--stored-logits", is_flag=True,
                     help="Judge the logits the bundles store without re-running them (where the data is not at "
                          "hand); the bundles' own claims, and the output says so."),
    ]):
        command = option(command)
    return command


@contextmanager
def replay_settings(replay_data, replay_engine, stored_logits):
    """The library's keywords for the replay options, with the warning --stored-logits deserves
    and a progress bar per bundle re-run, closed however the re-run ends."""
    if stored_logits:
        click.echo("warning: --stored-logits: judging the logits the bundles claim, not what their models compute",
                   err=True)
    progress = ReplayProgress()
    try:
        yield dict(replay=not stored_logits, data=replay_data, engine=replay_engine, progress=progress,
                   echo=lambda text: _tqdm().write(text, file=sys.stderr))
    finally:
        progress.close()


class ReplayProgress:
    """A progress bar on stderr per bundle re-run: `progress(name, done, total)`."""

    def __init__(self):
        self.bar, self.name = None, None

    def __call__(self, name, done, total):
        if name != self.name:
            self.close()
            self.bar, self.name = _tqdm()(desc=f"re-running {name}", unit="img", leave=False, file=sys.stderr), name
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar, self.name = None, None


def progress_bar(**kwargs):
    """A tqdm bar and a `progress(done, total, what)` callback that moves it. The bar waits
    half a second before it first shows, so input refused at once prints only its error."""
    bar = _tqdm()(leave=False, delay=0.5, **kwargs)

    def progress(done, total, what=None):
        bar.total = total
        bar.n = done
        if what:
            bar.set_description(what)
        bar.refresh()
    return bar, progress


def _tqdm():
    from tqdm import tqdm

    return tqdm


def names(text):
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SparsebiasError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SparsebiasError(f"{option}: every value must be at least 1, got {text!r}")
    return values


def loaded(paths, trusted_keys=()) -> list:
    """The bundles at `paths`, verified once; with trusted keys each must carry a signature one of them verifies."""
    from ..bundle import load_bundle, verify_bundle

    if not trusted_keys:
        return [load_bundle(path) for path in paths]
    bundles = [verify_bundle(path, trusted_keys) for path in paths]
    for path in paths:
        click.echo(f"signature of {path}: verified", err=True)
    return bundles


def say_signature_dropped(path, was_signed: bool) -> None:
    if was_signed:
        click.echo(f"note: {path} was signed; this new version is not (a signature cannot be renewed without the "
                   f"key): sign it again with `sparsebias sign {path} --key KEY`", err=True)
