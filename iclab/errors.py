"""User errors: what `iclab` reports as one line on stderr with exit code 2.

Whatever the user can fix — a bad option or config value, an unknown learner, shift, metric or analysis name, a
run directory that does not exist, is not a run, already exists or differs from a ``--resume`` — raises a subclass
of :class:`UserError` whose message is that one line. Anything else reaching :func:`iclab.cli.main` is a bug: its
traceback is saved to a log file, one line says where, and the exit code is 1.

The hierarchy (``ConfigError`` lives in :mod:`iclab.validation`, ``LearnerSpecError`` in
:mod:`iclab.algorithms.registry`; the rest here, re-exported where they are raised)::

    UserError
    ├── UsageError              a bad command line (unknown command, option, conflicting options)
    ├── ConfigError             an invalid configuration value                              (also a ValueError)
    ├── SpecError               a bad name or value in a spec string: shift, metric, …      (also a ValueError)
    │   └── LearnerSpecError    a bad learner name or argument
    └── RunError                a run directory that cannot be used as asked
        ├── RunExistsError      exists and neither --force nor --resume was given
        ├── RunNotFoundError    no config.json                                       (also a FileNotFoundError)
        ├── NoCheckpointError   a run without checkpoints                            (also a FileNotFoundError)
        ├── NotARunError        a config.json that is not a run's                           (also a ValueError)
        ├── ResumeError         --resume with a different config, or with --force           (also a ValueError)
        ├── CheckpointError     a checkpoint that is truncated, altered or has no checksum  (also a ValueError)
        └── LockedError         a run or sweep another live process is writing

Each subclass also derives from the builtin exception its raise sites used before, so ``except ValueError`` /
``except FileNotFoundError`` in library code and tests keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "LockedError",
    "NoCheckpointError",
    "NotARunError",
    "ResumeError",
    "RunError",
    "RunExistsError",
    "RunNotFoundError",
    "SpecError",
    "UsageError",
    "UserError",
]


class UserError(Exception):
    """An error the user can fix; its message is one line (the CLI prints ``error: <message>``, exit code 2)."""


class UsageError(UserError):
    """A bad command line: unknown command or option, a bad option value, options that exclude each other."""


class SpecError(UserError, ValueError):
    """A bad name or value in a user-given spec string (shift, metric, learner, …); names what is allowed."""


class RunError(UserError):
    """A run directory that cannot be used as asked."""


class RunExistsError(RunError):
    """The run directory already exists and neither ``force`` nor ``resume`` was given."""


class RunNotFoundError(RunError, FileNotFoundError):
    """No iclab run at the path (no config.json)."""


class NoCheckpointError(RunError, FileNotFoundError):
    """The run has no checkpoint to load (training never reached one)."""


class NotARunError(RunError, ValueError):
    """The path has a config.json, but not one written by iclab."""


class ResumeError(RunError, ValueError):
    """``--resume`` asked for something a resumed run cannot be: a different config, or ``--force`` as well."""


class CheckpointError(RunError, ValueError):
    """A checkpoint file that fails its integrity check (truncated, bit-flipped, or written without a checksum):
    it is never loaded; the message names the file."""


class LockedError(RunError):
    """Another live process holds the lock of this run or sweep directory (two writers would interleave)."""
