"""`python -m iclab …` is the `iclab` command (for environments where the console script is not installed)."""

from iclab.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
