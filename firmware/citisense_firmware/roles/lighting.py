"""Lighting role: the lamp's level every tick, its faults and energy, dim and schedule.

The level is lamp.target_level (override, schedule, ambient fail-safe) capped
by protective dimming, then faded at a fixed rate; right after boot the output goes
straight to the target. An override is kept in uptime seconds, so a time sync never
stretches or cuts it, and a reboot ends it (SPEC: dim). The schedule survives reboots
(/state/schedule, its CBOR object); in safe mode it is not used, only replaced.

Faults come from the driver's power feedback, debounced (lamp.FaultMonitor), read only
once the output has been steady for SETTLE_MS; a board without a power meter reports
power and energy as null and only the faults the driver or sensors report. Energy in
whole Wh is persisted hourly (/state/energy) and before a planned reboot.
"""

from citisense_firmware import config
from citisense_firmware.compat import const, ticks_diff
from citisense_firmware.hal import LIGHT, POWER
from citisense_firmware.lamp import (
    FAULT_LIGHT_SENSOR,
    EnergyMeter,
    FailsafePolicy,
    FaultMonitor,
    expected_power,
    fade_level,
    protect,
    target_level,
)
from citisense_firmware.roles import Role as _Role
from citisense_firmware.schedule import ScheduleError, parse
from citisense_protocols import cbor, messages

SCHEDULE_PATH = "/state/schedule"
ENERGY_PATH = "/state/energy"
SETTLE_MS = const(3000)  # the driver's power follows a level change within this
ENERGY_SAVE_S = const(3600)
U32 = 0xFFFFFFFF

SETTINGS = {
    "failsafe_level": (1, 100),  # without a schedule (the schedule's own `failsafe` wins)
    "dark_lux": (0, 65535),
    "light_lux": (1, 65535),
    "fade_ms": (0, 600000),  # 0 % -> 100 %
    "lamp_rated_dw": (1, 65535),  # power at 100 %, 0.1 W
    "lamp_standby_dw": (0, 65535),  # driver standby power, 0.1 W
}


class Role(_Role):
    code = messages.LIGHTING
    SETTINGS = SETTINGS
    SAFE_SENSE = True  # the ambient light keeps the fail-safe honest

    def __init__(self, node) -> None:
        super().__init__(node)
        self._record = config.DurableRecord(node.path(SCHEDULE_PATH))
        self.schedule = None
        self.version = 0
        self._load_schedule(node.safe_mode)
        self.override = None  # (level, until in uptime seconds)
        self.dark = None
        self.lux = None
        self.power = None
        self.output = None  # percent now on the lamp; None until the first tick
        self.target = 0
        self.source = messages.SOURCE_FAILSAFE
        self._fade_from = (0, 0)  # (level, ticks) where the current fade started
        self._changed_ms = 0
        self._sensed_ms = None
        self._metered = node.hal.has(POWER)
        self._energy = config.Counter(node.path(ENERGY_PATH))
        self.energy = EnergyMeter(self._energy.value or 0)
        self._energy_saved = node.clock.uptime()
        self.faults = FaultMonitor(1000, 10)
        self.lat = node.cfg.lat
        self.lon = node.cfg.lon

    def _load_schedule(self, safe_mode: bool) -> None:
        raw = self._record.load()
        if not raw:
            return
        try:
            obj = cbor.loads(raw)
            self.version = obj[0]
            if not safe_mode:
                self.schedule = parse(obj)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            print("citisense: stored schedule unusable:", error)
            self.version = 0

    def configure(self) -> None:
        setting = self.node.setting
        try:
            self.policy = FailsafePolicy(setting("failsafe_level", 100),
                                         setting("dark_lux", 30), setting("light_lux", 60))
        except ValueError:  # dark_lux not below light_lux
            self.policy = FailsafePolicy()
        self.fade_ms = setting("fade_ms", 3000)
        self.faults.rated_dw = setting("lamp_rated_dw", 1000)
        self.faults.standby_dw = setting("lamp_standby_dw", 10)

    def handlers(self) -> tuple:
        return ((messages.OP_DIM, self._dim), (messages.OP_SCHEDULE, self._schedule))

    def schedule_version(self) -> int:
        return self.version

    def busy(self) -> bool:
        return self.output is not None and self.output != self.target

    # -- control --------------------------------------------------------------------

    async def prepare(self) -> None:
        """The sun times the next tick needs, one at a time (Schedule.warm), their float
        garbage (~5 KB each) freed after each and the other tasks let run in between: a
        cold start of a schedule needs a dozen, too much garbage for one go."""
        node = self.node
        if self.schedule is not None and node.time_valid():
            for _ in self.schedule.warm(node.clock.unix(), self.lat, self.lon):
                node.hal.collect_garbage()
                await node.hal.sleep_ms(0)

    def tick(self) -> None:
        node = self.node
        uptime = node.clock.uptime()
        valid = node.time_valid()
        now = node.clock.unix() if valid else uptime
        override = None
        if self.override is not None:
            if self.override[1] <= uptime:
                self.override = None
            else:
                override = (self.override[0], now + self.override[1] - uptime)
        level, source, self.dark = target_level(
            now, valid, node.link_up(), self.lat, self.lon, self.schedule, override,
            self.policy, self.lux, self.dark,
        )
        level, source = protect(level, source, self.faults.flags)
        blink = node.identify_phase()
        if blink is not None:
            level, source = (100 if blink else 0), messages.SOURCE_IDENTIFY
        self.source = source
        # Right after boot straight to the target (a fade up from 0 would blink the street);
        # an identify blink is not faded either, or it would not be seen.
        self._drive(level, self.output is None or blink is not None)

    def _drive(self, level: int, at_once: bool) -> None:
        now = self.node.hal.ticks_ms()
        if at_once:
            self.target = level
            if level != self.output:
                self._set(level, now)
            return
        if level != self.target:
            self.target = level
            self._fade_from = (self.output, now)
        if self.output != self.target:
            start, since = self._fade_from
            out = fade_level(start, self.target, ticks_diff(now, since), self.fade_ms)
            if out != self.output:
                self._set(out, now)

    def _set(self, level: int, now: int) -> None:
        self.output = level
        self._changed_ms = now
        self.node.hal.lamp_output(level)

    # -- sensing --------------------------------------------------------------------

    def sense(self) -> None:
        node = self.node
        hal = node.hal
        now = hal.ticks_ms()
        reported = 0
        if hal.has(LIGHT):
            self.lux = hal.ambient_lux()
            if self.lux is None:
                reported |= FAULT_LIGHT_SENSOR
        power, driver_flags = hal.lamp_feedback()
        if not self._metered:
            power = None
        if power is not None and self._sensed_ms is not None:
            self.energy.add(power, ticks_diff(now, self._sensed_ms))
        self._sensed_ms = now
        self.power = power
        if self.output is None or ticks_diff(now, self._changed_ms) < SETTLE_MS:
            return  # fading or just changed: the power lags the level
        if not self._metered:
            # No meter: judge only what is reported, as if the power were as expected.
            power = expected_power(self.output, self.faults.rated_dw, self.faults.standby_dw)
        before = self.faults.flags
        after = self.faults.update(self.output, power, reported | driver_flags)
        if after & ~before:
            node.event(messages.EV_LAMP_FAULT, after)
        elif before & ~after:
            node.event(messages.EV_LAMP_OK, after)
        if self._metered and node.clock.uptime() - self._energy_saved >= ENERGY_SAVE_S:
            self._save_energy()

    def _save_energy(self) -> None:
        self._energy_saved = self.node.clock.uptime()
        if self._energy.value != self.energy.wh:
            self._energy.set(self.energy.wh)

    def telemetry(self) -> list:
        lux = None if self.lux is None else min(65535, max(0, int(self.lux + 0.5)))
        power = None if self.power is None else min(65535, max(0, self.power))
        energy = min(U32, self.energy.wh) if self._metered else None
        output = 0 if self.output is None else self.output
        return [output, self.source, power, energy, lux, self.faults.flags]

    def shutdown(self) -> None:
        if self._metered:
            self._save_energy()

    # -- commands -------------------------------------------------------------------

    def _dim(self, args: list) -> None:
        level, duration = args
        if duration == 0:
            self.override = None
        else:
            self.override = (level, self.node.clock.uptime() + duration)
        self.tick()

    def _schedule(self, obj: dict) -> int | None:
        try:
            schedule = parse(obj)
        except ScheduleError:
            return messages.BAD_ARGS
        if schedule.version <= self.version:
            return messages.STALE
        self._record.save(cbor.dumps(obj))
        self.schedule = schedule
        self.version = schedule.version
        self.node.tick_soon()  # once its sun times are computed
        return None
