"""`python -m citisense_gateway ...`: the `citisense gateway` commands."""

import sys

from citisense_gateway.cli import main

sys.exit(main())
