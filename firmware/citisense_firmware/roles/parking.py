"""Parking role: a bay's occupancy from its magnetometer, the bay light, reservations.

Sensing feeds parking_detector.BayDetector once per sense tick (uptime seconds); a change
sends the bay event (occupied with its confidence, free with how long it was taken) and
telemetry at once, and the bay light follows in the same tick. The baseline learnt by a
calibration is persisted (/state/baseline), so a reboot detects at once instead of
calibrating over a parked car. Reservations (Unix windows) are persisted too
(/state/reserve); the bay shows reserved only while the node has valid time.
"""

import struct

from citisense_firmware import config
from citisense_firmware.hal import SHOW_DARK
from citisense_firmware.parking_detector import (
    EVENT_CHANGE,
    EVENT_HEARTBEAT,
    FLAG_CALIBRATING,
    FLAG_SENSOR_FAULT,
    STATE_FREE,
    STATE_OCCUPIED,
    BayDetector,
    Reservations,
    indicator,
)
from citisense_firmware.roles import Role as _Role
from citisense_protocols import messages

BASELINE_PATH = "/state/baseline"
RESERVE_PATH = "/state/reserve"

SETTINGS = {
    "enter_nt": (200, 200000),  # deviation above which the bay turns occupied
    "exit_nt": (100, 200000),  # below which it turns free (must be under enter_nt)
    "enter_s": (1, 600),
    "exit_s": (1, 600),
    "heartbeat_s": (60, 86400),
}


class Role(_Role):
    code = messages.PARKING
    SETTINGS = SETTINGS

    def __init__(self, node) -> None:
        super().__init__(node)
        self._baseline = config.DurableRecord(node.path(BASELINE_PATH))
        self._reserve = config.DurableRecord(node.path(RESERVE_PATH))
        raw = self._baseline.load()
        baseline = struct.unpack(">iii", raw) if raw is not None and len(raw) == 12 else None
        self.detector = BayDetector(baseline=baseline)
        self.reservations = Reservations()
        raw = self._reserve.load() or b""
        for at in range(0, len(raw) - 7, 8):
            self.reservations.windows.append(struct.unpack(">II", raw[at:at + 8]))
        self._flags = self.detector.flags
        self._state = self.detector.state
        self._shown = None

    def configure(self) -> None:
        setting = self.node.setting
        detector = self.detector
        enter = setting("enter_nt", 2500)
        leave = setting("exit_nt", 1500)
        if leave < enter:
            detector.enter_nt, detector.exit_nt = enter, leave
        detector.enter_s = setting("enter_s", 10)
        detector.exit_s = setting("exit_s", 10)
        detector.heartbeat_s = setting("heartbeat_s", 600)

    def handlers(self) -> tuple:
        return ((messages.OP_RESERVE, self._reserve_bay), (messages.OP_RELEASE, self._release),
                (messages.OP_RECALIBRATE, self._recalibrate))

    def _reserved(self) -> bool:
        return self.node.time_valid() and self.reservations.active(self.node.clock.unix())

    # -- control --------------------------------------------------------------------

    def tick(self) -> None:
        show = indicator(self.detector.state, self._reserved())
        blink = self.node.identify_phase()
        if blink is not None and not blink:
            show = SHOW_DARK
        if show != self._shown:
            self._shown = show
            self.node.hal.indicator(show)

    # -- sensing --------------------------------------------------------------------

    def sense(self) -> None:
        node = self.node
        detector = self.detector
        happened = detector.update(node.clock.uptime(), node.hal.magnetic_field())
        flags = detector.flags
        if self._flags & FLAG_CALIBRATING and not flags & FLAG_CALIBRATING:
            base = detector.baseline
            self._baseline.save(struct.pack(">iii", int(base[0]), int(base[1]), int(base[2])))
        if flags & FLAG_SENSOR_FAULT and not self._flags & FLAG_SENSOR_FAULT:
            node.event(messages.EV_SENSOR_FAULT, messages.SENSOR_MAGNETOMETER)
        elif self._flags & FLAG_SENSOR_FAULT and not flags & FLAG_SENSOR_FAULT:
            node.event(messages.EV_SENSOR_OK, messages.SENSOR_MAGNETOMETER)
        self._flags = flags
        if happened == EVENT_CHANGE:
            if detector.state == STATE_OCCUPIED:
                node.event(messages.EV_BAY_OCCUPIED, detector.confidence)
            elif detector.state == STATE_FREE and self._state == STATE_OCCUPIED:
                node.event(messages.EV_BAY_FREE, min(detector.occupied_s, messages.U32))
            self._state = detector.state
            self.tick()
            node.send_telemetry()
        elif happened == EVENT_HEARTBEAT:
            node.send_telemetry()

    def telemetry(self) -> list:
        return self.detector.record(self._reserved())

    # -- commands -------------------------------------------------------------------

    def _save_reservations(self) -> None:
        raw = b""
        for start, until in self.reservations.windows:
            raw += struct.pack(">II", start, until)
        self._reserve.save(raw)
        self.tick()

    def _reserve_bay(self, window: list) -> int | None:
        if not self.reservations.reserve(window[0], window[1], self.node.clock.unix()):
            return messages.BAD_ARGS  # over already, or every slot taken
        self._save_reservations()
        return None

    def _release(self, _args) -> None:
        self.reservations.release()
        self._save_reservations()

    def _recalibrate(self, sensor: int) -> int | None:
        if sensor not in (messages.SENSOR_ALL, messages.SENSOR_MAGNETOMETER):
            return messages.BAD_ARGS  # this node has no such sensor
        if self.detector.state == STATE_OCCUPIED:
            return messages.FAILED  # the bay must be empty: the gateway retries later
        self.detector.recalibrate()
        return None
