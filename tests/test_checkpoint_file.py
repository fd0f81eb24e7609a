"""Checkpoint integrity (iclab.checkpoint_file) and the run lock (iclab.locks): damaged files are refused by name,
resume falls back to the newest intact checkpoint, a second writer is refused, a killed holder leaves no lock."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save as plain_save

from iclab import locks
from iclab.checkpoint_file import decode, encode
from iclab.errors import CheckpointError, LockedError
from iclab.runs import RunDir


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"model/w": torch.randn(4, 5, generator=g), "rng": torch.arange(7, dtype=torch.uint8)}


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(encode(_tensors(), {"meta": json.dumps({"step": 3})}))
    tensors, metadata = decode(path)
    for name, value in _tensors().items():
        assert torch.equal(tensors[name], value)
    assert json.loads(metadata["meta"]) == {"step": 3}


@pytest.mark.parametrize("where", ["data", "meta", "header_length"])
def test_every_single_bit_flip_tried_is_refused(tmp_path, where):
    data = bytearray(encode(_tensors(), {"meta": json.dumps({"step": 3})}))
    size = int.from_bytes(data[:8], "little")
    if where == "data":
        positions = range(8 + size, len(data), 7)  # every 7th byte of the tensor bytes
    elif where == "meta":
        positions = range(data.index(b"step"), data.index(b"step") + 4)
    else:
        positions = range(0, 4)
    for pos in positions:
        for bit in (0, 3, 7):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            path = tmp_path / "c.safetensors"
            path.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError, match=r"c\.safetensors"):
                decode(path)


def test_truncated_and_unchecksummed_files_are_refused(tmp_path):
    data = encode(_tensors(), {"meta": "{}"})
    path = tmp_path / "c.safetensors"
    for cut in (0, 5, 8, 40, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated|damaged|checksum"):
            decode(path)
    path.write_bytes(plain_save(_tensors(), {"meta": "{}"}))  # a valid safetensors file without a checksum
    with pytest.raises(CheckpointError, match="no checksum"):
        decode(path)


def _run_with_checkpoints(tmp_path, steps=(10, 20, 30)):
    run = RunDir.create(tmp_path / "run", {"train": {"seed": 0}})
    for step in steps:
        run.save_checkpoint(step, {"w": torch.full((3,), float(step))}, {"step": step})
    return run


def test_load_refuses_a_damaged_latest_and_resume_falls_back(tmp_path):
    run = _run_with_checkpoints(tmp_path)
    latest = run.latest_checkpoint()
    data = bytearray(latest.read_bytes())
    data[-3] ^= 0x10
    latest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step_00000030"):
        run.load_checkpoint()
    path, tensors, meta, refused = run.resume_checkpoint()
    assert path.name == "step_00000020.safetensors" and meta["step"] == 20
    assert torch.equal(tensors["w"], torch.full((3,), 20.0))
    assert len(refused) == 1 and "step_00000030" in refused[0]


def test_resume_with_no_intact_checkpoint_is_an_error_naming_one(tmp_path):
    run = _run_with_checkpoints(tmp_path, steps=(10,))
    run.latest_checkpoint().write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        run.resume_checkpoint()


def test_stray_temp_files_are_removed_on_resume(tmp_path):
    run = _run_with_checkpoints(tmp_path, steps=(10,))
    stray = run.path / "checkpoints" / ".step_00000020.safetensors.abc.tmp"
    stray.write_bytes(b"half")
    RunDir.create(run.path, {"train": {"seed": 0}}, resume=True)
    assert not stray.exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from iclab import locks
    locks.hold(sys.argv[1])
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"pid {holder.pid}"):
            locks.hold(target)
        with pytest.raises(LockedError):
            RunDir.create(target, {"train": {"seed": 0}}, force=True)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
        holder.stdout.close()
    locks.hold(target)  # the kernel dropped the dead holder's lock
    locks.release(target)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    run = RunDir.create(tmp_path / "run", {"train": {"seed": 0}})
    RunDir.create(run.path, {"train": {"seed": 0}}, resume=True)  # the same process: no LockedError
    locks.release(run.path)


def test_a_checkpoint_of_another_shape_is_refused_by_name(tmp_path):
    from iclab.config import ExperimentConfig, config_to_dict
    from iclab.training import load_model, train

    cfg = ExperimentConfig().replace(
        task={"d": 3, "n_points": 4},
        train={"steps": 4, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2},
        eval={"n_prompts": 16},
    )
    run = RunDir.create(tmp_path / "run", config_to_dict(cfg))
    train(cfg, run)
    other = RunDir.create(tmp_path / "other", config_to_dict(cfg.replace(task={"d": 5})))
    for ckpt in run.checkpoints():  # checkpoints of a d = 3 model under a d = 5 config
        (other.path / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    with pytest.raises(CheckpointError, match=r"step_00000004\.safetensors does not fit this run's model"):
        load_model(other)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        train(cfg.replace(task={"d": 5}), other, resume=True)


def test_a_renamed_tensor_or_altered_metadata_entry_is_refused(tmp_path):
    data = encode(_tensors(), {"meta": json.dumps({"step": 3}), "step": "100"})
    path = tmp_path / "c.safetensors"
    for old, new in ((b'"model/w"', b'"model/v"'), (b'"100"', b'"000"')):
        assert old in data
        path.write_bytes(data.replace(old, new, 1))
        with pytest.raises(CheckpointError, match="fails its checksum"):
            decode(path)


def test_one_directory_has_one_lock_however_it_is_named(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    locks.hold(real)
    locks.hold(tmp_path / "link")  # the same directory: re-entrant, not "locked by pid <own pid>"
    locks.hold(tmp_path / "real" / ".." / "real")
    locks.release(real)
