"""`python -m worker.cli`: the same as the `factsync` command."""

from worker.cli.main import main

main()
