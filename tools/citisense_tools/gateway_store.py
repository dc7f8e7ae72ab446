"""Which gateway store a command writes to: `--store URL`, else the gateway's own config."""

from __future__ import annotations

import argparse

from citisense_tools.errors import CommandError


def store_url(args: argparse.Namespace) -> str:
    """The store URL from `--store`, or from the gateway configuration (`--gateway-config`,
    $CITISENSE_CONFIG, CITISENSE_* variables) so tools reach the gateway's own database."""
    if args.store:
        return str(args.store)
    from citisense_gateway import config as gateway_config

    try:
        return gateway_config.load(args.gateway_config).store_url
    except (gateway_config.ConfigError, OSError) as err:
        raise CommandError(f"cannot read the gateway's configuration: {err}") from None
