def add_cli_args(p):
    pass


def main(args):
    return 0
