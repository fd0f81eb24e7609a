"""Run directories: resolved config, metrics, checkpoints and figures, all written atomically.

Layout of a run directory::

    config.json         {"config", "seed", "iclab_version", "git_sha", "created", "torch_version"}
    metrics.parquet     one row per logged step: "step" (int64) plus float columns
    checkpoints/        step_00000100.safetensors (last 3 kept); JSON metadata under "meta", a SHA-256 under "sha256"
    figures/

Every file is written to a temp file in the same directory, fsynced, then renamed over the target, so a
crash leaves either the old or the new version, never a torn file; a temp file a killed process left behind is
removed when the run is next opened for writing. Each checkpoint carries its own checksum
(iclab.checkpoint_file): a damaged one is never loaded, and a resume falls back to the newest intact one and says
so. A run being written is locked (iclab.locks): a second writer is refused, a crashed one leaves no stale lock.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import torch

from iclab import locks
from iclab.checkpoint_file import decode, encode
from iclab.errors import (
    CheckpointError,
    NoCheckpointError,
    NotARunError,
    ResumeError,
    RunExistsError,
    RunNotFoundError,
)

__all__ = [
    "RESUME_MUTABLE_KEYS",
    "RunDir",
    "RunExistsError",
    "atomic_write_bytes",
    "generator_state",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "restore_generator",
]

# Dotted config keys that may differ between a run and its --resume: extending training is the only
# change that keeps the resumed run equal to one trained for the new length from scratch.
RESUME_MUTABLE_KEYS: tuple[str, ...] = ("train.steps", "train.progress")

StrPath: TypeAlias = str | os.PathLike[str]

CHECKPOINT_KEEP = 3
OPTIM_PREFIX = "optim/"
_CKPT_GLOB = "step_*.safetensors"


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename, fsync dir.

    The temp file lives beside the target because ``os.replace`` is only atomic within one filesystem.
    On any error the temp file is removed and the previous content of ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the directory so the rename itself survives a power loss; some filesystems refuse it.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def generator_state(gen: torch.Generator) -> torch.Tensor:
    """Return the state of ``gen`` as a CPU uint8 tensor, storable in a safetensors checkpoint."""
    return gen.get_state().clone()


def restore_generator(gen: torch.Generator, state: torch.Tensor) -> None:
    """Set ``gen`` to a state from :func:`generator_state`; its next draws repeat the saved ones."""
    if state.dtype != torch.uint8:
        raise ValueError(f"generator state must be a uint8 tensor, got {state.dtype}")
    gen.set_state(state.detach().cpu().contiguous())


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten a torch optimizer ``state_dict()`` into safetensors-storable tensors plus JSON metadata.

    Tensors are named ``optim/state/{param_index}/{name}`` (for Adam: ``step``, ``exp_avg``,
    ``exp_avg_sq``); non-tensor per-parameter state and ``param_groups`` go into the returned meta dict,
    which must be stored alongside (e.g. ``meta={"optim": optim_meta}`` in :meth:`RunDir.save_checkpoint`).
    :func:`optimizer_from_tensors` inverts this exactly.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIM_PREFIX}state/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = []
    for i, group in enumerate(state_dict["param_groups"]):
        for key, value in group.items():
            try:
                json.dumps(value)
            except TypeError:
                raise TypeError(
                    f"optimizer param_groups[{i}].{key} is a {type(value).__name__}, not storable as JSON"
                ) from None
        # Tuples (Adam's betas) come back from JSON as lists; record them to restore the exact types.
        tuple_keys = sorted(k for k, v in group.items() if isinstance(v, tuple))
        groups.append({"group": dict(group), "tuple_keys": tuple_keys})
    meta = {
        "param_groups": groups,
        "state_scalars": scalars,
        "state_ids": [str(p) for p in state_dict["state"]],
    }
    return tensors, meta


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the optimizer ``state_dict`` saved by :func:`optimizer_to_tensors`.

    ``tensors`` may hold other checkpoint entries; only those under ``optim/`` are read. The result can
    be passed to ``optimizer.load_state_dict`` of a fresh optimizer over the same parameters.
    """
    # state_ids keeps the original order and parameters whose state is non-tensor only.
    state: dict[int, dict[str, Any]] = {int(pid): {} for pid in meta["state_ids"]}
    for key, value in tensors.items():
        if key.startswith(f"{OPTIM_PREFIX}state/"):
            pid, name = key[len(f"{OPTIM_PREFIX}state/") :].split("/", 1)
            state[int(pid)][name] = value
    for pid, scalars in meta["state_scalars"].items():
        state[int(pid)].update(scalars)
    groups = []
    for entry in meta["param_groups"]:
        group = dict(entry["group"])
        for key in entry["tuple_keys"]:
            group[key] = tuple(group[key])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _git_sha() -> str | None:
    """HEAD of the git repository at the current directory, or None outside one (or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _iclab_version() -> str:
    import iclab  # deferred: iclab/__init__.py may import this module

    return str(getattr(iclab, "__version__", "0.1.0"))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _first_config_difference(stored: dict[str, Any], given: dict[str, Any]) -> str | None:
    """One-line message naming the first differing dotted key (stored order, then new keys), else None."""
    a, b = _flatten(stored), _flatten(given)
    missing = "<missing>"
    for key in [*a, *(k for k in b if k not in a)]:
        if key in RESUME_MUTABLE_KEYS or a.get(key, missing) == b.get(key, missing):
            continue
        return (
            f"config differs from the stored run at '{key}': stored {a.get(key, missing)!r}, "
            f"given {b.get(key, missing)!r}; only {', '.join(RESUME_MUTABLE_KEYS)} may change on --resume"
        )
    return None


def _as_float(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric '{key}' must be a number, got {type(value).__name__}") from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _check_resumed_length(run: RunDir, config: dict[str, Any]) -> None:
    """train.steps may grow on --resume only where that equals training longer from scratch.

    A cosine schedule's shape depends on its length, so extending it would change the learning rate of steps
    already taken; and a run cannot be shortened below its latest checkpoint.
    """
    old, new = run.config().get("train", {}), config.get("train", {})
    if old.get("steps") == new.get("steps"):
        return
    if new.get("schedule", "constant") != "constant":
        raise ResumeError(
            f"train.steps: can change on --resume only with train.schedule constant (the {new.get('schedule')} "
            f"schedule's shape depends on its length); stored {old.get('steps')}, given {new.get('steps')}"
        )
    latest = run.latest_checkpoint()
    done = int(latest.stem.split("_")[1]) if latest is not None else 0
    if isinstance(new.get("steps"), int) and new["steps"] < done:
        raise ResumeError(
            f"train.steps: must be >= {done}, the step of the run's latest checkpoint, got {new['steps']}"
        )


def _unused(path: Path) -> bool:
    """`path` holds nothing of anyone's: an empty directory, or the empty skeleton (checkpoints/, figures/, the
    lock, the temp file of a config.json write that was cut off) of a run whose creation never finished."""
    if not path.is_dir():
        return False
    for child in path.iterdir():
        if child.name == locks.LOCK_NAME or (child.name.startswith(".config.json.") and child.suffix == ".tmp"):
            continue
        if child.name not in ("checkpoints", "figures") or not child.is_dir() or any(child.iterdir()):
            return False
    return True


class RunDir:
    """A run directory on disk. Obtain one with :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self._record = record

    @classmethod
    def create(
        cls, path: StrPath, config: dict[str, Any], *, force: bool = False, resume: bool = False, lock: bool = True
    ) -> RunDir:
        """Create a run at ``path`` for ``config`` (JSON-serialisable), or reopen it with ``resume``.

        An existing run (a directory with config.json) is reopened when ``resume`` is set, provided its
        stored config equals ``config`` apart from :data:`RESUME_MUTABLE_KEYS` (else :class:`ResumeError`, a
        ValueError, naming the first differing dotted key); it is deleted and recreated when ``force`` is set; otherwise
        :class:`RunExistsError` is raised. A non-empty directory that is not a run is never deleted. With ``lock``
        (the default) the process takes the run's lock first and keeps it (iclab.locks); a run written only
        under another lock (an ensemble's member runs, under the ensemble's) passes ``lock=False``.
        """
        if force and resume:
            raise ResumeError("--force and --resume are mutually exclusive")
        path = Path(path)

        # The JSON round trip normalises tuples to lists so a resumed config compares equal to the stored one.
        config = json.loads(json.dumps(config))
        foreign = f"{path} exists and is not an iclab run (no config.json); choose another path"
        if not (path / "config.json").is_file() and path.exists() and not _unused(path):
            raise RunExistsError(foreign)  # checked before the lock: a foreign directory gets no lock file
        if lock:
            locks.hold(path, "run")  # before anything is read, deleted or written; held until the process ends
        is_run = (path / "config.json").is_file()  # again, under the lock: another writer may have just finished
        if not is_run and path.exists() and not _unused(path):
            # Without config.json we cannot tell this is ours, so --force must not delete it.
            raise RunExistsError(foreign)
        if is_run:
            if resume:
                run = cls.open(path)
                diff = _first_config_difference(run.config(), config)
                if diff is not None:
                    raise ResumeError(diff)
                _check_resumed_length(run, config)
                record = dict(run._record, config=config)
                record["resumed"] = [*record.get("resumed", []), {"time": _now(), "git_sha": _git_sha()}]
                run._write_record(record)
                run._remove_stray_temp_files()
                return run
            if not force:
                raise RunExistsError(
                    f"run directory {path} already exists; pass --force to overwrite or --resume to continue"
                )
            locks.clear_except_lock(path)
        for sub in ("checkpoints", "figures"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        train = config.get("train")
        record = {
            "config": config,
            "seed": train.get("seed") if isinstance(train, dict) else None,
            "iclab_version": _iclab_version(),
            "git_sha": _git_sha(),
            "created": _now(),
            "torch_version": str(torch.__version__),
        }
        run = cls(path, record)
        # config.json is written last: its presence marks a complete run directory.
        run._write_record(record)
        return run

    @classmethod
    def open(cls, path: StrPath) -> RunDir:
        """Open an existing run; :class:`RunNotFoundError` (a FileNotFoundError) if ``path`` has no config.json,
        :class:`NotARunError` if its config.json is not a JSON object."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise RunNotFoundError(f"no iclab run at {path} (missing config.json)")
        try:
            record = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotARunError(f"run: {config_file} is not valid JSON ({exc}); not an iclab run") from None
        if not isinstance(record, dict):
            raise NotARunError(f"run: {config_file} is not a JSON object; not an iclab run")
        return cls(path, record)

    def _remove_stray_temp_files(self) -> None:
        """Delete the temp files of atomic writes a killed process left (only the lock holder may call this)."""
        for folder in (self.path, self.path / "checkpoints"):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _write_record(self, record: dict[str, Any]) -> None:
        self.write_json("config.json", record)
        self._record = record

    @property
    def record(self) -> dict[str, Any]:
        """The whole config.json: config plus seed, versions, git SHA and timestamps."""
        return self._record

    def config(self) -> dict[str, Any]:
        """The resolved experiment config stored in config.json."""
        if "config" not in self._record:
            raise NotARunError(f'run: {self.path / "config.json"} has no "config" entry; not an iclab run')
        return self._record["config"]

    @property
    def _metrics_file(self) -> Path:
        return self.path / "metrics.parquet"

    def metrics(self) -> pd.DataFrame:
        """All logged rows, in logging order; an empty frame with a "step" column if none."""
        if not self._metrics_file.is_file():
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        return pd.read_parquet(self._metrics_file)

    def log_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` (each an int "step" plus float-convertible values) to metrics.parquet.

        The file is rewritten whole on each call, so log in batches (e.g. once per eval interval). Rows
        may have different keys; missing values are NaN.
        """
        if not rows:
            return
        for row in rows:
            if "step" not in row:
                raise ValueError(f"metrics row has no 'step': {row!r}")
        new = pd.DataFrame([{k: int(v) if k == "step" else _as_float(k, v) for k, v in r.items()} for r in rows])
        old = self.metrics()
        df = new if old.empty else pd.concat([old, new], ignore_index=True)
        self._write_metrics(df)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows with step > ``after_step`` (on resume, rows logged after the checkpoint)."""
        if self._metrics_file.is_file():
            df = self.metrics()
            self._write_metrics(df[df["step"] <= after_step].reset_index(drop=True))

    def _write_metrics(self, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self._metrics_file, buf.getvalue())

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest step first."""
        return sorted((self.path / "checkpoints").glob(_CKPT_GLOB), key=lambda p: int(p.stem[len("step_") :]))

    def save_checkpoint(
        self,
        step: int,
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        *,
        keep: int = CHECKPOINT_KEEP,
    ) -> Path:
        """Write checkpoints/step_{step:08d}.safetensors atomically and keep only the last ``keep``.

        Tensors are stored detached, on CPU and contiguous; ``meta`` (JSON-serialisable) is stored as a
        JSON string under the safetensors metadata key "meta". Returns the checkpoint path.
        """
        if step < 0 or keep < 1:
            raise ValueError(f"need step >= 0 and keep >= 1, got step={step}, keep={keep}")
        stored = {}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"checkpoint entry '{name}' must be a tensor, got {type(t).__name__}")
            # clone: safetensors refuses tensors sharing storage (tied weights, views of one buffer).
            stored[name] = t.detach().cpu().contiguous().clone()
        metadata = {"meta": json.dumps(meta), "step": str(step), "iclab_version": _iclab_version()}
        path = atomic_write_bytes(self.path / "checkpoints" / f"step_{step:08d}.safetensors", encode(stored, metadata))
        for old in self.checkpoints()[:-keep]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None if there is none."""
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def load_checkpoint(self, path: StrPath | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Return (tensors on CPU, meta) from ``path``, or from the latest checkpoint if None, after checking its
        checksum: a damaged file raises CheckpointError naming it (it is never loaded, and no older one is
        silently used instead: `resume_checkpoint` is the one that falls back)."""
        if path is None:
            path = self.latest_checkpoint()
            if path is None:
                raise NoCheckpointError(f"no checkpoints in {self.path / 'checkpoints'}")
        tensors, metadata = decode(Path(path))
        return tensors, json.loads(metadata.get("meta", "{}"))

    def resume_checkpoint(self) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any], list[str]]:
        """The newest checkpoint that passes its check: (path, tensors, meta, one line per newer checkpoint that
        was refused and why). NoCheckpointError if there is none at all, CheckpointError if none is intact."""
        refused: list[str] = []
        for path in reversed(self.checkpoints()):
            try:
                tensors, meta = self.load_checkpoint(path)
            except CheckpointError as exc:
                refused.append(str(exc))
                continue
            return path, tensors, meta, refused
        if refused:
            raise CheckpointError(f"run: no intact checkpoint in {self.path / 'checkpoints'} ({refused[0]})")
        raise NoCheckpointError(f"no checkpoints in {self.path / 'checkpoints'}")

    def _artifact(self, name: str) -> Path:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"artifact name must be a relative path inside the run, got {name!r}")
        return self.path / rel

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON to ``name`` (relative to the run root), atomically."""
        return atomic_write_bytes(self._artifact(name), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))

    def write_text(self, name: str, text: str) -> Path:
        """Write UTF-8 ``text`` to ``name`` (relative to the run root), atomically."""
        return atomic_write_bytes(self._artifact(name), text.encode("utf-8"))

    def figure_path(self, name: str) -> Path:
        """Path for figure ``name`` under figures/ (directory created); the caller writes the file."""
        path = self._artifact(str(Path("figures") / name))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
