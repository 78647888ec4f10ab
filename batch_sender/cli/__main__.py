"""``python -m batch_sender.cli``: the same as the ``batch-sender`` command."""

from batch_sender.cli import main

main()
