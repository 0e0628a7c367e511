"""One module per command: each has ``HELP``, ``add_arguments(parser)`` and
``main(args, console) -> int``. The CLI entry (``bench.cli``) builds its parser from them."""
