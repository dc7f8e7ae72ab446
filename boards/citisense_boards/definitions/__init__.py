"""Board definitions: one tiny module per board, a plain dict named BOARD.

Each module is valid MicroPython and CPython alike: `citisense build` compiles the chosen
one into the bundle as `citisense_board.mpy`, where the firmware's HAL reads it
(`from citisense_board import BOARD`), and the tools read it here. The virtual board is
one more definition.

Keys of BOARD:
    name         the board's name, as in `--board`, the birth message and the config
    title        what a technician reads on the box
    chip         the ESP32 family member the MicroPython image must be built for
    micropython  MicroPython version the firmware is built and tested for, "major.minor"
    image        how to write MicroPython with esptool: {"port_board": MicroPython's board
                 name, "esptool_chip": esptool's --chip, "offset": flash address}; None if
                 the board cannot take an image (virtual)
    network      {"kind": "wlan"} or {"kind": "lan", "phy", "phy_addr", "mdc", "mdio",
                 "power", "ref_clk", "ref_clk_mode"} (arguments of network.LAN)
    roles        the roles the board is wired for
    reserved     GPIOs the board itself uses (console, Ethernet PHY, SD card), by purpose
    pins         GPIOs of the peripherals, by function (see PIN_KINDS)
    buses        bus settings: "i2c", "pm_uart", "rs485_uart" as {"id", "freq" or "baud"}
    drivers      driver name per peripheral; the HAL maps each name to a driver module
    addresses    I2C address per peripheral, for the parts named here (the others use
                 their driver's datasheet address). "rtc": a battery-backed clock chip
                 (driver "pcf8563") that keeps the time through power cuts
    psram        whether the module has PSRAM (RAM budget)
    romfs        bytes of the flash partition labelled "romfs" in the board's MicroPython
                 image (a build with ROMFS: MICROPY_VFS_ROM and that partition). The
                 application lives there as two ROMFS images, slot a in the first half and
                 slot b in the second, executed in place: only its data takes RAM
    scales       optional: analog front-end scale factors the HAL reads (see its docs)
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent
ROLES = ("lighting", "parking", "air")

# ESP32 GPIO facts (ESP32 datasheet, section "Pin Description" and "Strapping Pins").
GPIOS = frozenset((*range(0, 6), *range(12, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)))
FLASH_PINS = frozenset(range(6, 12))  # wired to the SPI flash on every module
INPUT_ONLY = frozenset(range(34, 40))
ADC1 = frozenset(range(32, 40))  # ADC2 cannot be read while WiFi runs: analog goes on ADC1
# A circuit driving these during reset starts the ROM downloader (0 low) or sets the
# flash voltage to 1.8 V (12 high): either way the application does not start.
BOOT_STRAPS = frozenset((0, 12))
FLASH_SECTOR = 4096  # the unit of a flash erase

OUTPUT, INPUT, ANALOG = "output", "input", "analog"
PIN_KINDS = {
    "lamp_pwm": OUTPUT,
    "indicator": OUTPUT,
    "status_led": OUTPUT,
    "i2c_sda": OUTPUT,  # open drain: the pin must be able to drive
    "i2c_scl": OUTPUT,
    "pm_tx": OUTPUT,
    "pm_set": OUTPUT,
    "rs485_tx": OUTPUT,
    "rs485_de": OUTPUT,
    "pm_rx": INPUT,
    "rs485_rx": INPUT,
    "button": INPUT,
    "light_adc": ANALOG,
    "no2_adc": ANALOG,
}
# What a role cannot run without; a power meter (lighting) and a bay light (parking) are
# optional: their telemetry fields are null without them.
ROLE_NEEDS = {
    "lighting": (("lamp_pwm", "light_adc"), ("lamp", "light")),
    "parking": (("i2c_sda", "i2c_scl"), ("magnetometer",)),
    "air": (("pm_tx", "pm_rx", "no2_adc", "i2c_sda", "i2c_scl"), ("pm", "climate", "no2")),
}
LAN_PINS = ("mdc", "mdio", "power", "ref_clk")


class UnknownBoard(LookupError):
    """No definition has that name."""


def _modules() -> dict[str, str]:
    """Board name -> module name, for every definition module in this folder."""
    found = {}
    for path in sorted(FOLDER.glob("*.py")):
        if path.stem != "__init__":
            board = importlib.import_module(f"{__name__}.{path.stem}").BOARD
            found[board["name"]] = path.stem
    return found


def names() -> list[str]:
    return sorted(_modules())


def _module(name: str) -> str:
    modules = _modules()
    if name not in modules:
        raise UnknownBoard(f"no board named {name!r}; known boards: {', '.join(sorted(modules))}")
    return modules[name]


def load(name: str) -> dict[str, Any]:
    """The definition of board `name` (UnknownBoard if there is none)."""
    board: dict[str, Any] = importlib.import_module(f"{__name__}.{_module(name)}").BOARD
    return board


def source(name: str) -> Path:
    """The definition's module file, shipped to the board as it is."""
    return FOLDER / f"{_module(name)}.py"


def problems(board: dict[str, Any]) -> list[str]:
    """Everything wrong with a definition, in words; empty if it is sound."""
    found: list[str] = []
    name = board.get("name", "?")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", str(name)):
        found.append(f"name {name!r}: 1..32 lowercase letters, digits and dashes")
    if not re.fullmatch(r"\d+\.\d+", str(board.get("micropython"))):
        found.append("micropython: must be 'major.minor', e.g. '1.29'")
    romfs = board.get("romfs")
    if not isinstance(romfs, int) or romfs <= 0 or romfs % (2 * FLASH_SECTOR):
        found.append(f"romfs {romfs!r}: the partition's size in bytes, a multiple of "
                     f"{2 * FLASH_SECTOR} (two slots of whole 4 KiB flash sectors)")
    for part, address in board.get("addresses", {}).items():
        if part not in board.get("drivers", {}):
            found.append(f"addresses.{part}: no driver is named for {part}")
        if not isinstance(address, int) or not 0x08 <= address <= 0x77:
            found.append(f"addresses.{part}: {address!r} is not a 7-bit I2C address "
                         "(0x08..0x77)")
    found += _pin_problems(board)
    found += _role_problems(board)
    return [f"board {name}: {problem}" for problem in found]


def _pin_problems(board: dict[str, Any]) -> list[str]:
    found = []
    owner: dict[int, str] = {}
    every = [*board.get("reserved", {}).items(), *board.get("pins", {}).items()]
    for function, pin in every:
        if pin in owner:
            found.append(f"GPIO{pin} is used twice: {owner[pin]} and {function}")
        owner[pin] = function
        if pin in FLASH_PINS:
            found.append(f"{function}: GPIO{pin} belongs to the SPI flash")
        elif pin not in GPIOS:
            found.append(f"{function}: the ESP32 has no GPIO{pin}")
    for function, pin in board.get("pins", {}).items():
        kind = PIN_KINDS.get(function)
        if kind is None:
            found.append(f"{function}: unknown pin function (known: {', '.join(PIN_KINDS)})")
        elif kind == OUTPUT and pin in INPUT_ONLY:
            found.append(f"{function}: GPIO{pin} is input only (34-39 cannot drive)")
        elif kind == OUTPUT and pin in BOOT_STRAPS:
            found.append(f"{function}: GPIO{pin} is a boot strapping pin; driving it can stop "
                         "the board from booting")
        elif kind == ANALOG and pin not in ADC1:
            found.append(f"{function}: GPIO{pin} is not on ADC1 (ADC2 is unusable with WiFi)")
    network = board.get("network") or {}
    if network.get("kind") == "lan":
        reserved = set(board.get("reserved", {}).values())
        for key in LAN_PINS:
            if network.get(key) not in reserved:
                found.append(f"network.{key}: GPIO{network.get(key)} must be listed in reserved")
    elif network.get("kind") != "wlan":
        found.append("network.kind: must be 'wlan' or 'lan'")
    return found


def _role_problems(board: dict[str, Any]) -> list[str]:
    found = []
    pins = board.get("pins", {})
    drivers = board.get("drivers", {})
    for role in board.get("roles", ()):
        if role not in ROLE_NEEDS:
            found.append(f"roles: unknown role {role!r} (known: {', '.join(ROLES)})")
            continue
        need_pins, need_drivers = ROLE_NEEDS[role]
        missing = [p for p in need_pins if p not in pins] + [
            f"driver {d}" for d in need_drivers if d not in drivers
        ]
        if missing:
            found.append(f"role {role} needs {', '.join(missing)}")
    return found
