"""The subcommands of the ``deepemhancer`` command, one module each.

Every module has ``add_args(parser)`` (its options) and ``main(args) -> int`` (run it; the exit code);
a module may also have ``check_args(parser, args)`` for option combinations argparse cannot express
(it calls ``parser.error``). :mod:`deepemhancer_engine.cli` picks the module from the first word of the
command line, parses, sets up logging and runs ``main`` under :func:`._run.guarded`, which maps errors to
one stderr line and an exit code. Options shared by the commands that run the network live in
:mod:`._args`, so that they cannot diverge between ``enhance`` and ``evaluate``.
"""
