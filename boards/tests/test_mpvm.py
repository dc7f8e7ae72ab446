"""The MicroPython VM host: a host that dies between runs is replaced, and says so."""

from __future__ import annotations

import pytest

from citisense_boards.mpvm import MicroPythonUnavailable, MicroPythonVM

pytestmark = pytest.mark.micropython


def test_a_dead_host_fails_the_run_and_is_replaced_at_the_next_reset() -> None:
    with MicroPythonVM() as vm:
        assert vm.run("print(6 * 7)") == "42\n"
        vm._proc.kill()
        vm._proc.wait()
        with pytest.raises(MicroPythonUnavailable, match="MicroPython host exited"):
            vm.run("print(1)")
        with pytest.warns(RuntimeWarning, match="host had exited"):
            vm.reset()
        assert vm.run("print(6 * 7)") == "42\n"


def test_work_left_on_the_event_loop_does_not_kill_the_host() -> None:
    with MicroPythonVM() as vm:
        # A task that fails after its run has returned: the host must survive it.
        vm.run(
            "import asyncio\n"
            "async def later():\n"
            "    await asyncio.sleep_ms(50)\n"
            "    raise ValueError('after the run')\n"
            "asyncio.create_task(later())\n"
        )
        vm.run("import time\ntime.sleep_ms(200)")
        vm.reset()
        assert vm.run("print('alive')") == "alive\n"
