"""What the board runs: the app loader (/main.py) imports this module and calls main().

The import already loads the app and the HAL, so a slot whose code cannot even be
imported is rejected by the loader, which then tries the other slot.
"""

import asyncio
import gc
import sys

from citisense_firmware import app
from citisense_firmware.compat import sleep_ms
from citisense_firmware.hal_machine import MachineHal

RESTART_AFTER_MS = 5000


def main() -> None:
    from citisense_board import BOARD

    try:
        from citisense_release import ROLE
    except ImportError:
        ROLE = "lighting"
    hal = MachineHal(BOARD)
    try:
        asyncio.run(app.run(hal, default_role=ROLE))
    except Exception as error:  # anything: report it, then restart clean
        gc.collect()  # after a MemoryError, printing the report needs the heap back first
        sys.print_exception(error)
        # Counted by BootGuard: a crash loop ends in safe mode, not in a dark street.
        sleep_ms(RESTART_AFTER_MS)
        hal.reset()
