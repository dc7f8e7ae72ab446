"""The board's hardware behaves like an ESP32's: sensors on their buses, the lamp,
the watchdog, the heap limit, resets and what survives them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from citisense_boards import sensors
from citisense_boards.street import Street, StreetClock
from citisense_boards.virtual_board import VirtualBoard

pytestmark = [pytest.mark.virtual_board, pytest.mark.micropython]

Mpremote = Callable[..., subprocess.CompletedProcess[str]]

# A small field script, written as firmware would be: datasheet drivers on the
# board's wiring (citisense_boards.wiring), a lamp that follows the light.
PROBE = """
import json, struct, time
from machine import ADC, I2C, PWM, Pin, UART

i2c = I2C(0, scl=Pin(22), sda=Pin(21))


def bme280():
    chip = i2c.readfrom_mem(0x76, 0xD0, 1)[0]
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack(
        "<HhhHhhhhhhhh", i2c.readfrom_mem(0x76, 0x88, 24))
    h1 = i2c.readfrom_mem(0x76, 0xA1, 1)[0]
    e = i2c.readfrom_mem(0x76, 0xE1, 7)
    h2, h3 = struct.unpack("<hB", e[:3])
    h4 = (e[3] << 4) | (e[4] & 0x0F)
    h5 = (e[5] << 4) | (e[4] >> 4)
    h6 = struct.unpack("<b", e[6:7])[0]
    i2c.writeto_mem(0x76, 0xF2, b"\\x01")
    i2c.writeto_mem(0x76, 0xF4, b"\\x25")  # forced mode, x1 oversampling
    while i2c.readfrom_mem(0x76, 0xF3, 1)[0] & 0x08:
        time.sleep_ms(2)
    d = i2c.readfrom_mem(0x76, 0xF7, 8)
    adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
    adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
    adc_h = (d[6] << 8) | d[7]
    # The datasheet's floating-point compensation (section 8.1).
    v1 = (adc_t / 16384 - t1 / 1024) * t2
    v2 = (adc_t / 131072 - t1 / 8192) ** 2 * t3
    t_fine = v1 + v2
    v1 = t_fine / 2 - 64000
    v2 = v1 * v1 * p6 / 32768 + v1 * p5 * 2
    v2 = v2 / 4 + p4 * 65536
    v1 = (p3 * v1 * v1 / 524288 + p2 * v1) / 524288
    v1 = (1 + v1 / 32768) * p1
    p = (1048576 - adc_p - v2 / 4096) * 6250 / v1
    p += (p9 * p * p / 2147483648 + p * p8 / 32768 + p7) / 16
    h = t_fine - 76800
    h = (adc_h - (h4 * 64 + h5 / 16384 * h)) * (
        h2 / 65536 * (1 + h6 / 67108864 * h * (1 + h3 / 67108864 * h)))
    h = h * (1 - h1 * h / 524288)
    return {"chip": chip, "celsius": t_fine / 5120, "pascal": p, "humidity": h}


def magnetometer():
    i2c.writeto_mem(0x0D, 0x0B, b"\\x01")
    i2c.writeto_mem(0x0D, 0x09, b"\\x1d")  # continuous, 200 Hz, 8 G
    while not i2c.readfrom_mem(0x0D, 0x06, 1)[0] & 0x01:
        time.sleep_ms(2)
    x, y, z = struct.unpack("<hhh", i2c.readfrom_mem(0x0D, 0x00, 6))
    return [v / 30 for v in (x, y, z)]  # 3000 LSB/G at 8 G, in uT


def particulates():
    uart = UART(1, 9600, tx=33, rx=32, timeout=1500)
    query = bytearray(b"\\xaa\\xb4\\x04" + bytes(12) + b"\\xff\\xff\\x00\\xab")
    query[17] = sum(query[2:17]) & 0xFF
    uart.read()
    uart.write(query)
    while True:
        frame = uart.read(10)
        if frame and frame[:2] == b"\\xaa\\xc0" and sum(frame[2:8]) & 0xFF == frame[8]:
            pm25, pm10 = struct.unpack("<HH", frame[2:6])
            return [pm25 / 10, pm10 / 10]


def run():
    lux = ADC(Pin(36), atten=ADC.ATTN_11DB).read_uv() / 1000  # 1 mV per lux
    no2 = (ADC(Pin(39), atten=ADC.ATTN_6DB).read_uv() / 1000 - 500) / 4
    lamp = PWM(Pin(25), freq=1000, duty_u16=65535 if lux < 50 else 0)
    print(json.dumps({"lux": lux, "no2": no2, "bme280": bme280(), "field": magnetometer(),
                      "pm": particulates(), "lamp": lamp.duty_u16()}))
"""


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def night_street() -> Street:
    return Street(clock=StreetClock(start=at("2025-01-15T22:00:00")), seed=1)


def probe(mpremote_on: Mpremote, board: VirtualBoard) -> dict[str, object]:
    out = mpremote_on(board.repl_port, "exec", "import probe; probe.run()").stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_deployed_script_reads_the_street_and_drives_the_lamp(
    mpremote_on: Mpremote, night_street: Street, tmp_path: Path
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    with VirtualBoard("pole-7", role="all", street=night_street) as board:
        mpremote_on(board.repl_port, "fs", "cp", str(script), ":probe.py")
        night_street.clock.advance(60)  # the PM sensor's fan settles for 30 s after power-on
        board.sync()
        night = probe(mpremote_on, board)
        street = night_street
        air = street.air
        assert night["lux"] < 5 and night["lamp"] == 65535
        assert abs(night["no2"] - air.no2) < 3
        bme = night["bme280"]
        assert bme["chip"] == 0x60
        assert abs(bme["celsius"] - street.celsius()) < 0.3
        assert abs(bme["pascal"] - air.pressure_hpa * 100) < 30
        assert abs(bme["humidity"] - air.humidity) < 2
        assert all(abs(a - b) < 1.0 for a, b in zip(
            night["field"], street.magnetic_field(board.bay, street.celsius()), strict=True))
        pm25, pm10 = night["pm"]
        assert abs(pm25 - air.pm25) < 0.1 * air.pm25 + 0.2
        assert abs(pm10 - air.pm10) < 0.1 * air.pm10 + 0.2

        street.clock.advance(14 * 3600)  # to noon: the sun is up
        street.park(board.bay)
        board.sync()
        day = probe(mpremote_on, board)
        assert day["lux"] > 2000 and day["lamp"] == 0
        assert abs(day["field"][2] - night["field"][2]) > 10  # the car, seen by the bay sensor

    lamp = [s.duty_u16 for s in board.lamp_history()]
    assert lamp[:2] == [65535, 0]  # on in the night, off at noon (then released at power-off)
    times = [s.t for s in board.lamp_history()]
    assert at("2025-01-15T22:00:00") <= times[0] < at("2025-01-15T23:00:00")
    assert at("2025-01-16T12:00:00") <= times[1] < at("2025-01-16T13:00:00")


def test_an_unfed_watchdog_resets_even_a_stuck_cpu(mpremote_on: Mpremote) -> None:
    with VirtualBoard("dog", role="lighting") as board:
        mpremote_on(board.repl_port, "exec", "--no-follow",
                    "from machine import WDT\nWDT(timeout=800)\nwhile True:\n    pass")
        board.wait_for_boot(2, timeout=15)
        assert [e.cause for e in board.events() if e.kind == "reset"] == ["WDT"]
        # Like an ESP32's panic output, the board says where the CPU was stuck.
        assert any(line.startswith("log: watchdog reset: the CPU was running Python, since "
                                   "board call wdt_start(800) for ") for line in board.log()), \
            board.log()
        out = mpremote_on(board.repl_port, "exec", "import machine; print(machine.reset_cause())")
        assert out.stdout.strip() == "3"  # machine.WDT_RESET
        # A fed watchdog keeps the board alive.
        mpremote_on(board.repl_port, "exec",
                    "import time\nfrom machine import WDT\nw = WDT(timeout=800)\n"
                    "for _ in range(12):\n    time.sleep_ms(200)\n    w.feed()")
        assert board.boot_count() == 2


def test_an_allocation_past_the_heap_limit_raises_memory_error(mpremote_on: Mpremote) -> None:
    with VirtualBoard("heap", role="lighting", heap_bytes=64 * 1024) as board:
        done = mpremote_on(board.repl_port, "exec", "b = bytearray(80 * 1024)")
        assert "MemoryError" in done.stdout + done.stderr
        out = mpremote_on(
            board.repl_port, "exec",
            "import gc\ndef fill():\n    kept = []\n    try:\n        while True:\n"
            "            kept.append(bytearray(1024))\n    except MemoryError:\n"
            "        return len(kept)\nprint(fill())\ngc.collect()\nprint(gc.mem_free())",
        ).stdout.split()
        assert 40 < int(out[0]) < 64  # about the heap in 1 KiB blocks, not more
        assert 50 * 1024 < int(out[1]) <= 64 * 1024  # and it is all free again
        # Garbage made while running is collected on the way, as on a board.
        out = mpremote_on(
            board.repl_port, "exec",
            "import time\nfor i in range(400):\n    b = bytearray(1024)\n    time.sleep_ms(0)\n"
            "print('ok')",
        ).stdout
        assert out.strip() == "ok"


def test_nvs_rtc_memory_and_deep_sleep_survive_what_they_survive_on_an_esp32(
    mpremote_on: Mpremote,
) -> None:
    with VirtualBoard("keeper", role="parking") as board:
        mpremote_on(board.repl_port, "exec",
                    "import esp32, machine\nn = esp32.NVS('cfg')\nn.set_i32('boots', 7)\n"
                    "n.set_blob('key', b'secret')\nn.commit()\n"
                    "machine.RTC().memory(b'seq=42')")
        sleep = "import machine\nmachine.deepsleep(300)"
        mpremote_on(board.repl_port, "exec", "--no-follow", sleep)
        board.wait_for_boot(2, timeout=15)
        out = mpremote_on(
            board.repl_port, "exec",
            "import esp32, machine\nn = esp32.NVS('cfg')\nb = bytearray(16)\n"
            "print(machine.reset_cause(), machine.wake_reason(), n.get_i32('boots'),"
            " bytes(b[:n.get_blob('key', b)]), machine.RTC().memory())",
        ).stdout.strip()
        assert out == "4 4 7 b'secret' b'seq=42'"  # DEEPSLEEP_RESET, TIMER_WAKE
        board.power_cycle()
        out = mpremote_on(
            board.repl_port, "exec",
            "import esp32, machine\nprint(machine.reset_cause(), "
            "esp32.NVS('cfg').get_i32('boots'), machine.RTC().memory())",
        ).stdout.strip()
        assert out == "1 7 b''"  # PWRON_RESET: flash keeps NVS, RTC memory is gone
        missing = mpremote_on(board.repl_port, "exec", "import esp32; esp32.NVS('x').get_i32('y')")
        assert "ESP_ERR_NVS_NOT_FOUND" in missing.stdout + missing.stderr


def test_bytes_handed_to_the_board_leave_nothing_on_the_heap(mpremote_on: Mpremote) -> None:
    # Each call used to keep its bytes alive (~48 B a register read): a node reading its
    # sensors ran out of heap after some ten street minutes.
    with VirtualBoard("leak", role="parking") as board:
        out = mpremote_on(board.repl_port, "exec", (
            "import gc, machine\n"
            "i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))\n"
            "u = machine.UART(2, 115200)\n"
            "rtc = machine.RTC()\n"
            "def go(n):\n"
            "    for _ in range(n):\n"
            "        i2c.readfrom_mem(0x0D, 0x00, 6)\n"
            "        i2c.writeto_mem(0x0D, 0x0B, b'\\x01')\n"
            "        u.write(b'a telemetry message')\n"
            "        rtc.memory(b'seq=42')\n"
            "go(10)\ngc.collect()\nbefore = gc.mem_alloc()\ngo(400)\ngc.collect()\n"
            "print(gc.mem_alloc() - before)")).stdout
        assert int(out.strip()) < 400  # under a byte a round: nothing kept per call


def test_the_romfs_partition_is_nor_flash_mapped_as_rom_segment_0(
        mpremote_on: Mpremote) -> None:
    with VirtualBoard("rom", role="lighting") as board:
        setup = ("import esp32, vfs\n"
                 "p = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='romfs')[0]\n"
                 "m = memoryview(vfs.rom_ioctl(2, 0))\n")
        out = mpremote_on(board.repl_port, "exec", setup + (
            "print(p.info()[3], p.ioctl(4, 0), p.ioctl(5, 0), bytes(m[4096:4100]))\n"
            "p.writeblocks(1, b'\\x0f' * 4096)\n"  # erased, then written
            "p.writeblocks(1, b'\\xf5\\xff', 2)\n"  # no erase: a write only clears bits
            "b = bytearray(4)\np.readblocks(1, b)\n"
            "print(bytes(b), bytes(m[4096:4100]))")).stdout.split("\n")
        assert out[0].strip() == "327680 80 4096 b'\\xff\\xff\\xff\\xff'"
        assert out[1].strip() == "b'\\x0f\\x0f\\x05\\x0f' b'\\x0f\\x0f\\x05\\x0f'"
        board.power_cycle()  # flash keeps it; the mapping shows it after boot
        out = mpremote_on(board.repl_port, "exec", setup + (
            "print(bytes(m[4096:4100]))\np.ioctl(6, 1)\nprint(bytes(m[4096:4100]))\n"
            "print(len(esp32.Partition.find(esp32.Partition.TYPE_APP)))")).stdout.split()
        assert out == ["b'\\x0f\\x0f\\x05\\x0f'", "b'\\xff\\xff\\xff\\xff'", "1"]
        beyond = mpremote_on(board.repl_port, "exec", setup + "p.readblocks(80, bytearray(1))")
        assert "OSError" in beyond.stdout + beyond.stderr


def test_timers_and_pin_interrupts_reach_an_asyncio_program(mpremote_on: Mpremote) -> None:
    code = (
        "import asyncio\nfrom machine import Pin, Timer\n"
        "ticks = []\nedges = []\nflag = asyncio.ThreadSafeFlag()\n"
        "t = Timer(0)\nt.init(period=50, callback=lambda t: ticks.append(1))\n"
        "def edge(pin):\n    edges.append(pin.value())\n    flag.set()\n"
        "Pin(5, Pin.IN, Pin.PULL_DOWN).irq(edge, Pin.IRQ_RISING)\n"
        "async def main():\n    await asyncio.wait_for(flag.wait(), 5)\n"
        "    await asyncio.sleep_ms(300)\n"
        "asyncio.run(main())\nt.deinit()\nprint(len(edges), len(ticks) >= 5)"
    )
    with VirtualBoard("irq", role="lighting") as board:
        runner = subprocess.Popen(
            [sys.executable, "-m", "mpremote", "connect", board.repl_port, "exec", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(2.0)
        board.set_input(5, 1)
        out, err = runner.communicate(timeout=30)
        assert out.strip() == "1 True", err


def test_time_follows_the_street_clock(mpremote_on: Mpremote) -> None:
    street = Street(clock=StreetClock(start=at("2025-05-01T06:00:00"), speed=60))
    with VirtualBoard("fast", role="lighting", street=street) as board:
        start = time.monotonic()
        out = mpremote_on(
            board.repl_port, "exec",
            "import time, asyncio\nt0 = time.ticks_ms()\n"
            "async def nap():\n    await asyncio.sleep(90)\nasyncio.run(nap())\n"
            "print(time.ticks_diff(time.ticks_ms(), t0), time.localtime()[:4])",
        ).stdout.split(maxsplit=1)
        assert int(out[0]) >= 90_000  # 90 s of street time ...
        assert time.monotonic() - start < 20  # ... in far fewer real seconds
        assert out[1].startswith("(2025, 5, 1, 6)")  # the RTC shows street time


def test_a_power_cut_resets_the_esp32_clock_and_the_rtc_chip_keeps_counting(
        mpremote_on: Mpremote) -> None:
    street = Street(clock=StreetClock(start=at("2031-03-04T22:00:00"), speed=1))
    read = ("import time\nfrom machine import I2C, Pin\n"
            "i2c = I2C(0, scl=Pin(22), sda=Pin(21))\n"
            "print(time.localtime()[0], i2c.readfrom_mem(0x51, 2, 7).hex())")
    with VirtualBoard("pole", role="lighting", street=street) as board:
        year, regs = mpremote_on(board.repl_port, "exec", read).stdout.split()
        assert year == "2031" and int(regs[:2], 16) & 0x80  # a new chip: VL set
        # 2031-03-04 23:30:00 (a Tuesday), written as a driver does: control registers
        # cleared (clock running), then the time with VL clear.
        written = at("2031-03-04T23:30:00")
        mpremote_on(board.repl_port, "exec",
                    "from machine import I2C, Pin\ni2c = I2C(0, scl=Pin(22), sda=Pin(21))\n"
                    "i2c.writeto_mem(0x51, 0, bytes([0, 0, 0x00, 0x30, 0x23, 0x04, 2, 0x03, "
                    "0x31]))")
        street.clock.advance(3600)  # an hour later the power goes, and comes back
        board.power_cycle()
        year, regs = mpremote_on(board.repl_port, "exec", read).stdout.split()
        assert year == "2000"  # the ESP32's clock restarted
        chip = sensors.decode_pcf8563(bytes.fromhex(regs))  # None if VL were set
        assert chip is not None and written + 3600 <= chip < written + 3660
    street = Street(clock=StreetClock(start=at("2031-03-04T22:00:00"), speed=1))
    with VirtualBoard("bay", role="parking", street=street) as board:
        out = mpremote_on(board.repl_port, "exec",
                          "from machine import I2C, Pin\n"
                          "print(I2C(0, scl=Pin(22), sda=Pin(21)).scan())").stdout
        assert out.strip() == "[13]"  # only lighting nodes carry the clock chip


def test_setting_the_rtc_far_ahead_leaves_ticks_and_asyncio_alone(mpremote_on: Mpremote) -> None:
    # The clock restored from an RTC chip after a power cut jumps 26 years: ticks count
    # from boot whatever the RTC says, so tasks created afterwards still run.
    with VirtualBoard("jump", role="lighting", rtc_synced=False) as board:
        out = mpremote_on(board.repl_port, "exec", (
            "import asyncio, machine, time\n"
            "t0 = time.ticks_ms()\n"
            "machine.RTC().datetime((2026, 11, 23, 0, 23, 0, 0, 0))\n"
            "async def job():\n    await asyncio.sleep_ms(50)\n    return 7\n"
            "async def main():\n    return await asyncio.wait_for(asyncio.create_task(job()), 2)\n"
            "print(asyncio.run(main()), time.ticks_diff(time.ticks_ms(), t0) < 2000, "
            "time.localtime()[0])"), timeout=30).stdout.split()
        assert out == ["7", "True", "2026"]
