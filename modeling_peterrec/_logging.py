"""How the commands log: warnings from every library, progress (INFO) from this package's own loggers."""

from __future__ import annotations

import logging

PACKAGE_LOGGERS = ("modeling_peterrec", "tokenization")


def configure_command_logging() -> None:
    """The logging of `peterrec` commands and of the reproduction's worker processes."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for package in PACKAGE_LOGGERS:
        logging.getLogger(package).setLevel(logging.INFO)
