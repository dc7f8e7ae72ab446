"""The three roles a node can play; app.Node imports only the one its config names.

A role is a class `Role(node)` with:
    code        messages.LIGHTING, PARKING or AIR (birth `role`)
    SETTINGS    set_config names it defines: name -> (lowest, highest) integer range
    SENSE_MS    default sensing period
    SAFE_SENSE  whether it senses in safe mode (only what its fail-safe needs)
    handlers()  (opcode, handler) pairs for commands.Downlink
    configure() re-read its settings (after boot and every set_config)
    prepare()   async: what the next tick() needs that takes long, done between waits
    tick()      control: evaluated every control tick and right after boot
    sense()     read the sensors, detect changes, send events
    telemetry() the telemetry data array
    shutdown()  persist what must survive a planned reboot
"""


class Role:
    code = 0
    SETTINGS = {}
    SENSE_MS = 1000
    SAFE_SENSE = False

    def __init__(self, node) -> None:
        self.node = node

    def handlers(self) -> tuple:
        return ()

    def configure(self) -> None:
        pass

    async def prepare(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def sense(self) -> None:
        pass

    def telemetry(self) -> list:
        raise NotImplementedError

    def schedule_version(self) -> int | None:
        """Birth `sched` (lighting only)."""
        return None

    def busy(self) -> bool:
        """True while the role needs quick control ticks (a fade in progress)."""
        return False

    def shutdown(self) -> None:
        pass
