"""`python -m lorapod_cli`: the same as the `lorapod` script."""

from lorapod_cli.main import main

main()
