"""Value ranges shared by the configs and the command line (a light module: the CLI imports it at start-up)."""

MAX_SEED = 2**32 - 1  # numpy's seed range: `train.seed`, recipe seeds and the CLI's seed options
