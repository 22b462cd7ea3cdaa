"""``python -m tierstore``: the inspect CLI (see ``tierstore.cli``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
