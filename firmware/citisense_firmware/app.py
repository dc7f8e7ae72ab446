"""The node application: boot, one task per concern, commands, uplink.

    asyncio.run(app.run(hal))       # main.main() on a board; the fleet simulator per node

Boot. Load the provisioned config; without a usable one (missing, corrupt, invalid) the
node cannot talk (no key, no default key), so it says why on the console and in
/state/fault, blinks its status LED, keeps a lighting node's lamp on its ambient-light
fail-safe, feeds the watchdog and looks at the config again every _FAULT_RETRY_S: no crash
loop. With a config: BootGuard (after 3 boots in a row that never ran FIT_AFTER_S
without a stuck task, safe mode: the stored schedule is not used and only a lamp's
ambient sensor is read, while commands still work, so a bad schedule or setting can be
replaced remotely), the boot counter, time from the real-time clock if a time source set
it recently, the store-and-forward queue, the role. The role reads its sensors and its
control runs once before any task starts: a lamp is at its target right after boot,
whatever the network does.

Tasks: control (the role's tick: lamp level, bay light, fan duty), sense (the role's
readings and events), report (telemetry and health at their intervals), uplink (network,
MQTT or serial, forwarding the queue), watchdog. The watchdog is fed only while every task is
alive and every looping task reported progress recently; a stuck or dead task therefore
resets the board (reset cause 3).

Time. Every clock read and sleep goes through the HAL (a simulated board runs faster
than real time). Unix time comes from a gateway time sync (tq 1) or NTP (tq 2) and is
trusted for _MAX_TIME_AGE_S after the last sync; the real-time clock keeps it across a
reboot. Network waits (MQTT, the ack drain before a reboot) run on real time.

Files, under `root` (empty on a board): /config.json and /state/settings (config.py),
/state/boot, /state/down, /state/guard, /state/time, /state/cause, /state/fault,
/queue (store_forward.py), and the role's own /state records.
"""

import asyncio
import struct

from citisense_firmware import config
from citisense_firmware.commands import Downlink
from citisense_firmware.compat import const, ticks_add, ticks_diff, unload
from citisense_firmware.hal import LAMP, STATUS_LED
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import Clock, Health, Uplink, birth_data, next_boot
from citisense_protocols import messages

try:
    from citisense_release import VERSION
except ImportError:  # not a built bundle: development tree, fleet simulator
    VERSION = "0.0.0-dev"

BOOT_PATH = "/state/boot"
DOWN_PATH = "/state/down"
GUARD_PATH = "/state/guard"
TIME_PATH = "/state/time"
CAUSE_PATH = "/state/cause"
FAULT_PATH = "/state/fault"
QUEUE_PATH = "/queue"

_WATCHDOG_MS = const(30000)  # hardware watchdog timeout
_FEED_MS = const(2000)
FIT_AFTER_S = const(300)  # up this long with every task alive: the boot proved itself
_MAX_TIME_AGE_S = const(604800)  # a week after the last sync the clock is no longer trusted
_NTP_EVERY_S = const(86400)
_LINK_SILENCE_S = const(300)  # serial: no uplink-ack for this long means the link is down
_FAULT_RETRY_S = const(30)
_NETWORK_RETRY_MS = const(5000)
_DRAIN_S = const(5)  # real seconds to let the reboot ack leave before resetting
_SLICE_MS = const(10000)  # longest sleep of the reporting tasks (re-reads their interval)
_BLINK_MS = const(500)
_DEFAULT_TICK_MS = const(1000)
_FORWARD_IDLE_S = const(10)  # queued messages wake the forwarder; this paces the store's flushes

# set_config settings the node itself defines: name -> (lowest, highest), or TEXT.
TEXT = "text"
NODE_SETTINGS = {
    "telemetry_s": (10, 86400),
    "health_s": (60, 86400),
    "tick_ms": (100, 600000),
    "sense_ms": (100, 600000),
    "ntp_host": TEXT,
}


def _role_module(name: str):
    # Only the configured role's code is loaded: RAM.
    if name == "lighting":
        from citisense_firmware.roles import lighting as module
    elif name == "parking":
        from citisense_firmware.roles import parking as module
    else:
        from citisense_firmware.roles import air as module
    return module


class Node:
    def __init__(self, hal, root: str = "", fw: str = VERSION,
                 default_role: str = "lighting") -> None:
        self.hal = hal
        self.root = root
        self.fw = fw
        self.default_role = default_role  # what an unconfigured board was built for
        self.cfg = None
        self.role = None
        self.client = None
        self.safe_mode = False
        self.reset_cause = messages.RESET_UNKNOWN
        self.clock = Clock(hal.ticks_ms)
        self.synced_at = None  # Unix time of the last time sync
        self.tick_ms = _DEFAULT_TICK_MS
        self.sense_ms = 1000
        self.known = NODE_SETTINGS
        self._tasks = []
        self._ticking = None  # the task of tick_soon()
        self._beats = {}  # task name -> [ticks of its last progress, longest gap in ms]
        self._stop = asyncio.Event()
        self._cause = None  # reset cause to record when the app stops for a reboot
        self._identify_until = None
        self._led = None
        self._last_ack_ms = None
        self._sent_ms = 0
        self._fit = False
        self._link_mark = (0, 0, 0)  # (seq, queue depth, drops) at the last health message

    def path(self, name: str) -> str:
        return self.root + name

    # -- life cycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until a commanded reboot, then reset the board (hal.reset())."""
        self.hal.watchdog_start(_WATCHDOG_MS)
        cfg = self._load_config()
        while isinstance(cfg, config.Fault):
            cfg = await self._unconfigured(cfg)
        config.remove(self.path(FAULT_PATH))
        try:
            self.boot(cfg)
            await self.prepared_tick()
            self._start()
            await self._stop.wait()
            await self._shutdown()
        finally:
            self._cancel()
        self.hal.reset()

    def _load_config(self):
        from citisense_firmware import config_load

        try:
            return config_load.load_config(self.path(config.CONFIG_PATH),
                                           self.path(config.SETTINGS_PATH))
        finally:
            unload("citisense_firmware.config_load")  # boot and set_config only

    def boot(self, cfg) -> None:
        """Everything up to the first control tick; no task runs yet."""
        self.cfg = cfg
        self.reset_cause = self._take_reset_cause()
        self.guard = config.BootGuard(self.path(GUARD_PATH))
        self.safe_mode = self.guard.begin()
        if self.safe_mode:
            print("citisense: safe mode after", self.guard.failures - 1, "failed boots")
        self.boot_number = next_boot(config.Counter(self.path(BOOT_PATH)))
        self._restore_time()
        self.store = Store(self.path(QUEUE_PATH), clock=self.hal.ticks_ms)
        self.uplink = Uplink(cfg.node_id, cfg.key, self.boot_number, self.clock, self.store)
        self.downlink = Downlink(cfg.node_id, cfg.key, config.Counter(self.path(DOWN_PATH)),
                                 self.clock, self.uplink)
        self.health = Health(self.fw, self.reset_cause, self.hal.memory())
        self.role = _role_module(cfg.role).Role(self)
        known = dict(NODE_SETTINGS)
        known.update(self.role.SETTINGS)
        self.known = known
        self._configure()
        down = self.downlink
        down.register(messages.OP_TIME_SYNC, self._time_sync)
        down.register(messages.OP_SET_CONFIG, self._set_config)
        down.register(messages.OP_REBOOT, self._reboot)
        down.register(messages.OP_IDENTIFY, self._identify)
        for op, handler in self.role.handlers():
            down.register(op, handler)
        self._sent_ms = ticks_add(self.hal.ticks_ms(), -86400000)  # first telemetry at once
        self._sense_once()

    async def prepared_tick(self) -> None:
        """A control tick once the role prepared it: right after boot, before any task runs,
        and for tick_soon()."""
        await self.role.prepare()
        self.role.tick()

    def tick_soon(self) -> None:
        """A control tick now, but after the role prepared it (a command's handler cannot
        wait): a new schedule or a new time may need new sun times first."""
        ticking = self._ticking
        if ticking is None or ticking.done():  # else the coming tick sees the change too
            self._ticking = asyncio.create_task(self.prepared_tick())

    def _start(self) -> None:
        for loop in (self._control, self._sense, self._report, self._uplink, self._watchdog):
            self._tasks.append(asyncio.create_task(loop()))

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None

    async def _shutdown(self) -> None:
        """Before a commanded reboot: let the ack leave, keep what must survive."""
        waited = 0
        while self.store.depth and self.link_up() and waited < _DRAIN_S * 10:
            await asyncio.sleep(0.1)
            waited += 1
        if self.client is not None:
            await self.client.disconnect()  # a planned restart: no will
        self.role.shutdown()
        self.store.flush()
        if self._cause is not None:
            config.DurableRecord(self.path(CAUSE_PATH)).save(bytes([self._cause]))

    def power_off(self) -> None:
        """Simulated power cut: stop everything where it is (nothing flushed, no DISCONNECT,
        so the broker publishes the will)."""
        self._cancel()
        if self.client is not None and self.client.connected:
            self.client._lost(OSError("power cut"))  # MQTTClient has no public abort

    def _take_reset_cause(self) -> int:
        """The board's reset cause, unless the app recorded why it reset itself."""
        record = config.DurableRecord(self.path(CAUSE_PATH))
        recorded = record.load()
        if recorded:
            record.save(b"")  # once: a later crash must report its own cause
            if recorded[0] <= messages.RESET_UPDATE:
                return recorded[0]
        return self.hal.reset_cause()

    # -- unconfigured ---------------------------------------------------------------

    async def _unconfigured(self, fault):
        """No usable config: report it, keep the lamp safe, look again later."""
        print("citisense: cannot run:", fault.reason)
        reason = fault.reason.encode()
        if config.read_file(self.path(FAULT_PATH)) != reason:
            config.makedirs(self.path("/state"))
            config.write_file(self.path(FAULT_PATH), reason)
        lamp = self.default_role == "lighting" and self.hal.has(LAMP)
        if lamp:
            from citisense_firmware.lamp import FailsafePolicy, target_level

            policy = FailsafePolicy()
        dark = None
        for second in range(_FAULT_RETRY_S):
            if lamp:
                # No time, no link, no schedule: the ambient sensor decides, else full on.
                level, _, dark = target_level(0, False, False, 0.0, 0.0, None, None, policy,
                                              self.hal.ambient_lux(), dark)
                self.hal.lamp_output(level)
            self.hal.status_led(second % 2 == 0)
            self.hal.watchdog_feed()
            await self.hal.sleep_ms(1000)
        return self._load_config()

    # -- settings -------------------------------------------------------------------

    def setting(self, name: str, default):
        """A setting's value if it is set and within its rule, else `default`."""
        value = self.cfg.settings.get(name)
        rule = self.known.get(name)
        if value is None or rule is None:
            return default
        if rule == TEXT:
            return value if type(value) is str else default
        if type(value) is int and rule[0] <= value <= rule[1]:
            return value
        return default

    def _configure(self) -> None:
        self.tick_ms = self.setting("tick_ms", _DEFAULT_TICK_MS)
        self.sense_ms = self.setting("sense_ms", self.role.SENSE_MS)
        self.role.configure()

    def telemetry_s(self) -> int:
        return self.setting("telemetry_s", self.cfg.intervals["telemetry"])

    def health_s(self) -> int:
        return self.setting("health_s", self.cfg.intervals["health"])

    # -- time -----------------------------------------------------------------------

    def time_valid(self) -> bool:
        """The clock holds Unix time from a time source synced recently enough."""
        unix = self.clock.unix()
        return (unix is not None and self.synced_at is not None
                and 0 <= unix - self.synced_at <= _MAX_TIME_AGE_S)

    def set_time(self, unix: int, quality: int) -> None:
        self.clock.set(unix, quality)
        self.hal.set_rtc(unix)
        self.synced_at = unix
        config.DurableRecord(self.path(TIME_PATH)).save(struct.pack(">IB", unix, quality))

    def _restore_time(self) -> None:
        raw = config.DurableRecord(self.path(TIME_PATH)).load()
        unix = self.hal.rtc_time()
        if raw is None or len(raw) != 5 or unix is None:
            return
        synced_at, quality = struct.unpack(">IB", raw)
        if unix >= synced_at:
            self.clock.set(unix, quality)
            self.synced_at = synced_at

    # -- helpers for roles ----------------------------------------------------------

    def event(self, kind: int, detail: int) -> None:
        self.uplink.send(messages.EVENT, [kind, detail])

    def send_telemetry(self) -> None:
        self._sent_ms = self.hal.ticks_ms()
        self.uplink.send(messages.TELEMETRY, self.role.telemetry())

    def link_up(self) -> bool:
        if self.client is not None:
            return self.client.connected
        return (self._last_ack_ms is not None
                and ticks_diff(self.hal.ticks_ms(), self._last_ack_ms) < _LINK_SILENCE_S * 1000)

    def identify_phase(self):
        """None when not identifying, else whether the blink is in its lit half."""
        if self._identify_until is None:
            return None
        now = self.hal.ticks_ms()
        if ticks_diff(self._identify_until, now) <= 0:
            self._identify_until = None
            return None
        return ticks_diff(self._identify_until, now) // _BLINK_MS % 2 == 1

    # -- commands -------------------------------------------------------------------

    def _time_sync(self, unix: int) -> None:
        self.set_time(unix, messages.TQ_GATEWAY)
        self.tick_soon()

    def _identify(self, seconds: int) -> None:
        self._identify_until = ticks_add(self.hal.ticks_ms(), seconds * 1000)
        self.role.tick()

    def _reboot(self, _args) -> None:
        self._cause = messages.RESET_COMMANDED
        self._stop.set()

    def _set_config(self, changes: dict) -> int | None:
        for name, value in changes.items():
            rule = self.known.get(name)
            if rule is None:
                return messages.BAD_ARGS
            if value is None:
                continue  # restores the default
            if rule == TEXT:
                if type(value) is not str:
                    return messages.BAD_ARGS
            elif type(value) is not int or not rule[0] <= value <= rule[1]:
                return messages.BAD_ARGS
        from citisense_firmware import config_load

        try:
            problem = config_load.save_settings(changes, self.known,
                                                self.path(config.SETTINGS_PATH))
        finally:
            unload("citisense_firmware.config_load")
        if problem:
            return messages.BAD_ARGS
        cfg = self._load_config()
        if isinstance(cfg, config.Fault):
            return messages.FAILED
        self.cfg = cfg  # a new birth `cfg` digest from the next connect on
        self._configure()
        return None

    # -- tasks ----------------------------------------------------------------------

    def _beat(self, name: str, gap_ms: int) -> None:
        self._beats[name] = (self.hal.ticks_ms(), gap_ms)

    def _slice_ms(self) -> int:
        return max(self.tick_ms, _SLICE_MS)

    async def _control(self) -> None:
        while True:
            await self.prepared_tick()
            self.health.sample()
            blink = self.identify_phase()
            if self.hal.has(STATUS_LED) and bool(blink) != self._led:
                self._led = bool(blink)
                self.hal.status_led(self._led)
            self._beat("control", 3 * self.tick_ms + 2000)
            wait = self.tick_ms
            if self.role.busy() or blink is not None:
                wait = min(wait, 100 if self.role.busy() else _BLINK_MS // 2)
            await self.hal.sleep_ms(wait)

    def _sense_once(self) -> None:
        # In safe mode only the fail-safe senses (a lamp's ambient light): a crashing
        # sensor driver may be why the node is in safe mode.
        if not self.safe_mode or self.role.SAFE_SENSE:
            self.role.sense()

    async def _sense(self) -> None:
        while True:
            self._sense_once()
            self._beat("sense", 3 * self.sense_ms + 2000)
            await self.hal.sleep_ms(self.sense_ms)

    async def _report(self) -> None:
        """Telemetry and health, each at its own interval (one task: RAM)."""
        health_ms = self.hal.ticks_ms()
        while True:
            self._beat("report", 3 * self._slice_ms())
            now = self.hal.ticks_ms()
            telemetry = self.telemetry_s() * 1000 - ticks_diff(now, self._sent_ms)
            health = self.health_s() * 1000 - ticks_diff(now, health_ms)
            if telemetry <= 0:
                self.send_telemetry()
            elif health <= 0:
                health_ms = now
                self.send_health()
            else:
                await self.hal.sleep_ms(min(telemetry, health, self._slice_ms()))

    def send_health(self) -> None:
        store = self.store
        seq, depth, drops = self._link_mark
        sent = self.uplink.seq - seq
        # Messages made since the last health message that left the queue.
        delivered = sent - (store.depth - depth) - (store.drops - drops)
        link = None if sent <= 0 else max(0, min(100, delivered * 100 // sent))
        data = self.health.data(self.clock.uptime(), store.depth, store.drops,
                                self.hal.rssi(), link)
        self.uplink.send(messages.HEALTH, data)
        self._link_mark = (self.uplink.seq, store.depth, store.drops)

    async def _watchdog(self) -> None:
        while True:
            if self._healthy():
                self.hal.watchdog_feed()
                if not self._fit and self.clock.uptime() >= FIT_AFTER_S:
                    self._fit = True
                    self.guard.healthy()
            await self.hal.sleep_ms(_FEED_MS)

    def _healthy(self) -> bool:
        for task in self._tasks:
            if task.done():
                return False
        now = self.hal.ticks_ms()
        for name in self._beats:
            last, gap = self._beats[name]
            if ticks_diff(now, last) > gap:
                return False
        return True

    # -- uplink ---------------------------------------------------------------------

    def birth(self) -> dict:
        cfg = self.cfg
        return birth_data(self.fw, cfg.role_code, cfg.board, cfg.digest,
                                 self.reset_cause, cfg.location, self.role.schedule_version())

    async def _uplink(self) -> None:
        if self.cfg.transport == "serial":
            await self._serial()
        else:
            await self._mqtt()

    async def _mqtt(self) -> None:
        from citisense_firmware.mqtt import MQTTClient
        from citisense_firmware.uplink import forward_mqtt, mqtt_will
        from citisense_protocols import topics

        cfg = self.cfg
        up = cfg.uplink
        while not await self.hal.network_up(cfg.wifi):
            self._beat("uplink", 3 * _NETWORK_RETRY_MS + 60000)
            await self.hal.sleep_ms(_NETWORK_RETRY_MS)
        will, on_connect = mqtt_will(self.uplink, self.birth)
        client = MQTTClient(
            str(cfg.node_id), up["host"], up.get("port", 1883), up["user"], up["password"],
            keepalive=up.get("keepalive", 60), will=will, on_connect=on_connect,
            on_message=self._on_message,
        )
        self.client = client
        await client.subscribe(topics.node_filter(cfg.node_id))
        self._tasks.append(asyncio.create_task(client.run()))
        self._tasks.append(asyncio.create_task(
            forward_mqtt(self.store, client, cfg.node_id, idle=_FORWARD_IDLE_S,
                         wake=self.uplink.queued)))
        await self._keep_time()

    async def _on_message(self, topic, payload: bytes) -> None:
        await self.downlink.handle(payload)

    async def _serial(self) -> None:
        from citisense_firmware.serial_uplink import SerialLink

        reader, writer = self.hal.serial_link(self.cfg.uplink.get("baud", 115200))
        link = SerialLink(reader, writer, self.downlink, self.store)
        confirm = self.downlink.on_uplink_ack

        def acked(boot: int, seq: int) -> None:
            self._last_ack_ms = self.hal.ticks_ms()
            confirm(boot, seq)

        self.downlink.on_uplink_ack = acked
        self.uplink.send(messages.BIRTH, self.birth())
        self._tasks.append(asyncio.create_task(link.receive()))
        self._tasks.append(asyncio.create_task(link.forward()))
        await self._keep_time()

    async def _keep_time(self) -> None:
        """NTP, where the network offers it: now and daily."""
        while True:
            unix = await self.hal.network_time(self.setting("ntp_host", None))
            if unix is not None:
                self.set_time(unix, messages.TQ_NTP)
            waited = 0
            while waited < _NTP_EVERY_S * 1000:
                self._beat("uplink", 3 * self._slice_ms())
                await self.hal.sleep_ms(self._slice_ms())
                waited += self._slice_ms()


async def run(hal, root: str = "", fw: str = VERSION, default_role: str = "lighting") -> None:
    """Run a node on `hal` with its files under `root`, until the board resets."""
    await Node(hal, root, fw, default_role).run()
