"""Placeholder until the subcommand lands."""


def add_arguments(parser):
    """Add no options yet."""


def run(args):
    """Report that the subcommand is not built yet."""
    print("not implemented yet")
    return 2
