"""The reproduction directory (iclab.experiments.common.prepare_out): never overwritten without --force, and
--force deletes only a directory a reproduction made; configs are validated before the directory is touched."""

import json

import pytest

from iclab.config import ConfigError
from iclab.experiments import reproduce
from iclab.experiments.common import MARKER, prepare_out


def _foreign(tmp_path):
    out = tmp_path / "project"
    (out / "runs").mkdir(parents=True)  # looks like a reproduction's layout, but was not made by one
    (out / "data.txt").write_text("keep")
    return out


def test_force_never_deletes_a_directory_it_did_not_make(tmp_path):
    out = _foreign(tmp_path)
    with pytest.raises(ConfigError, match="not a reproduction directory"):
        prepare_out(out, force=True, resume=False)
    with pytest.raises(ConfigError, match="already exists"):
        prepare_out(out, force=False, resume=False)
    assert (out / "data.txt").read_text() == "keep"


def test_force_wipes_a_reproduction_and_resume_keeps_it(tmp_path):
    out = tmp_path / "r"
    prepare_out(out, force=False, resume=False)
    assert (out / MARKER).exists() and (out / "figures").is_dir()
    (out / "runs" / "a").mkdir(parents=True)
    prepare_out(out, force=False, resume=True)
    assert (out / "runs" / "a").is_dir()
    prepare_out(out, force=True, resume=False)
    assert not (out / "runs").exists() and (out / MARKER).exists()
    with pytest.raises(ConfigError, match="not both"):
        prepare_out(out, force=True, resume=True)


def test_a_reproduction_from_before_the_marker_is_recognised_by_its_results(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"name": "von-oswald", "claims": []}))
    prepare_out(out, force=True, resume=False)
    assert not (out / "results.json").exists()


def test_empty_directory_and_file(tmp_path):
    (tmp_path / "empty").mkdir()
    prepare_out(tmp_path / "empty", force=True, resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        prepare_out(tmp_path / "file", force=True, resume=False)


def test_a_bad_config_fails_before_the_directory_is_touched(tmp_path):
    out = tmp_path / "r"
    prepare_out(out, force=False, resume=False)
    (out / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"train\.seed"):
        reproduce("garg", out=out, force=True, seed=-1, progress=False)
    assert (out / "results.json").read_text() == "{}"
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match=r"train\.seed"):
        reproduce("garg", out=fresh, seed=-1, progress=False)
    assert not fresh.exists()


def test_force_refuses_a_reproduction_still_running_in_out(tmp_path):
    import subprocess
    import sys

    from iclab.errors import LockedError

    out = tmp_path / "repro"
    holder_code = (
        "import sys, time\nfrom pathlib import Path\nfrom iclab.experiments.common import prepare_out\n"
        "out = Path(sys.argv[1])\nprepare_out(out, False, False)\n(out / 'runs').mkdir()\n"
        "(out / 'runs' / 'precious').write_text('x')\nprint('running', flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "running"
        with pytest.raises(LockedError, match=rf"pid {holder.pid}"):
            prepare_out(out, True, False)
        assert (out / "runs" / "precious").read_text() == "x"  # nothing deleted under a running reproduction
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    prepare_out(out, True, False)  # the holder is gone: --force may clear it now
    assert not (out / "runs").exists()
