"""Sweeps: many runs from one spec, on this machine or on Ray (docs/sweeps.md).

spec.py          the YAML spec, its validation and expansion into trials and units
store.py         the sweep directory: sweep.json, units/, outcomes/, logs/
execute.py       run_unit and the local executor (ray_executor.py: the Ray Tune one)
driver.py        run_sweep, sweep_status
collect.py       the tidy table, its summary and figure
"""

from iclab.sweeps.collect import collect, plot_sweep, summarise
from iclab.sweeps.driver import print_status, run_sweep, sweep_status
from iclab.sweeps.spec import SweepSpec, expand, load_spec, parse_spec

__all__ = [
    "SweepSpec",
    "collect",
    "expand",
    "load_spec",
    "parse_spec",
    "plot_sweep",
    "print_status",
    "run_sweep",
    "summarise",
    "sweep_status",
]
