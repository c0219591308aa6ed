"""The ``metarun`` command. It chooses how OpenMP's threads wait (``metarun.engine.openmp_wait``)
before anything imports torch, since GNU OpenMP reads that setting only when torch loads; then it
runs ``metarun.cli``."""
from __future__ import annotations


def main() -> None:
    from metarun.engine.openmp_wait import choose_openmp_wait

    choose_openmp_wait()
    from metarun.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
