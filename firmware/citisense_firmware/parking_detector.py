"""Parking-bay occupancy from a magnetometer under the bay, and the bay's indicator.

A vehicle's steel distorts the Earth's field; the detector compares each reading with a
baseline of the empty bay and decides with hysteresis and minimum dwell:

- calibration: the mean of `calibration_samples` steady readings of the empty bay
  (at first start and on the `recalibrate` command, meanwhile an earlier baseline keeps
  detecting); a reading that moves by more than `steady_nt` from the running mean
  restarts it;
- deviation: the distance in nT between the reading and the baseline;
- occupied after the deviation stays above `enter_nt` for `enter_s` seconds; free after it
  stays below `exit_nt` for `exit_s` seconds (exit_nt < enter_nt: hysteresis);
- drift: temperature and slow magnetic drift are followed by moving the baseline a
  1/`track_weight` step toward each reading, only while the bay is confidently free (free
  state and deviation below `exit_nt`), so a parked car is never absorbed;
- departure after a long stay: drift accumulated meanwhile (a cold night after a warm
  evening) can leave the empty bay inside the hysteresis band. A drop of more than
  `enter_nt` away from the parked car's field to a deviation below `enter_nt` also frees
  the bay after `exit_s`, and the baseline restarts from that reading;
- `fault_reads` failed or saturated reads in a row, or `stuck_reads` identical ones,
  make the state unknown until readings recover.

`update` returns EVENT_CHANGE when the state changes, EVENT_HEARTBEAT when the state
has not been reported for `heartbeat_s` seconds, else EVENT_NONE. Times are integer
seconds on any monotonic clock. Nothing here identifies a vehicle: only the field
deviation of the bay is kept.
"""

from math import sqrt

from citisense_firmware.compat import const

STATE_FREE = const(0)
STATE_OCCUPIED = const(1)
STATE_UNKNOWN = const(2)

INDICATOR_FREE = const(0)
INDICATOR_OCCUPIED = const(1)
INDICATOR_RESERVED = const(2)

EVENT_NONE = const(0)
EVENT_CHANGE = const(1)
EVENT_HEARTBEAT = const(2)

# Parking telemetry flags (field 4), as in the contract.
FLAG_CALIBRATING = const(1)  # learning a baseline now
FLAG_UNCALIBRATED = const(2)  # no baseline yet: the state is unknown
FLAG_SENSOR_FAULT = const(4)  # reads fail, saturate or are stuck
FLAG_RESERVED_TAKEN = const(8)  # occupied during a reservation window
FLAG_DRIFT = const(16)  # baseline moved far from its calibration: recalibration advised


class BayDetector:
    def __init__(
        self,
        enter_nt: int = 2500,
        exit_nt: int = 1500,
        enter_s: int = 10,
        exit_s: int = 10,
        heartbeat_s: int = 600,
        calibration_samples: int = 16,
        steady_nt: int = 400,
        track_weight: int = 64,
        drift_nt: int = 3000,
        fault_reads: int = 5,
        stuck_reads: int = 30,
        saturation_nt: int = 800_000,
        baseline: tuple | None = None,
    ) -> None:
        if not 0 < exit_nt < enter_nt:
            raise ValueError("need 0 < exit_nt < enter_nt")
        self.enter_nt = enter_nt
        self.exit_nt = exit_nt
        self.enter_s = enter_s
        self.exit_s = exit_s
        self.heartbeat_s = heartbeat_s
        self.calibration_samples = calibration_samples
        self.steady_nt = steady_nt
        self.track_weight = track_weight
        self.drift_nt = drift_nt
        self.fault_reads = fault_reads
        self.stuck_reads = stuck_reads
        self.saturation_nt = saturation_nt
        self.state = STATE_UNKNOWN
        self.deviation = 0  # nT from the baseline, any direction
        self.dz = 0  # nT, vertical component of the deviation
        self.changed_at = None  # time of the last state change
        self.occupied_s = 0  # how long the bay was occupied, set on each change to free
        self._calibrating = False
        self._failed = 0
        self._same = 0
        self._last = None
        self._since = None  # when readings started favouring `_wanted` over the state
        self._wanted = None
        self._parked = None  # the field with the car in the bay, followed while it stays
        self._reported = None  # time of the last change or heartbeat
        self._calibrated = None  # baseline right after calibration, for the drift flag
        self._sum = [0.0, 0.0, 0.0]
        self._count = 0
        self.baseline = None
        if baseline is None:
            self.recalibrate()
        else:
            # A persisted baseline: the state is re-derived from readings with the same
            # dwell rules, so a reboot reports the bay as it is.
            self.baseline = [float(baseline[0]), float(baseline[1]), float(baseline[2])]
            self._calibrated = tuple(self.baseline)

    def recalibrate(self) -> None:
        """Learn the baseline again; the bay must be empty while it does."""
        self._calibrating = True
        self._sum = [0.0, 0.0, 0.0]
        self._count = 0

    @property
    def flags(self) -> int:
        flags = FLAG_CALIBRATING if self._calibrating else 0
        if self.baseline is None:
            flags |= FLAG_UNCALIBRATED
        if self._failed >= self.fault_reads or self._same >= self.stuck_reads:
            flags |= FLAG_SENSOR_FAULT
        if self.baseline is not None and self._calibrated is not None:
            moved = _distance(self.baseline, self._calibrated)
            if moved > self.drift_nt:
                flags |= FLAG_DRIFT
        return flags

    @property
    def confidence(self) -> int:
        """Percent: how far the deviation sits from the middle of the hysteresis band."""
        if self.state == STATE_UNKNOWN:
            return 0
        middle = (self.enter_nt + self.exit_nt) // 2
        margin = abs(self.deviation - middle) * 100 // middle
        return min(100, 50 + margin // 2)

    def record(self, reserved: bool) -> list:
        """Parking telemetry data: [state, indicator, dz in 0.1 uT, confidence %, flags]."""
        dz = None
        if self.baseline is not None and self.state != STATE_UNKNOWN:
            dz = max(-8000, min(8000, round(self.dz / 100)))
        return [
            self.state,
            indicator(self.state, reserved),
            dz,
            self.confidence,
            self.flags | reservation_flag(self.state, reserved),
        ]

    def update(self, now: int, reading: tuple | None) -> int:
        """Account one reading (x, y, z) in nT, or None for a failed read."""
        if reading is None or _saturated(reading, self.saturation_nt):
            self._failed += 1
            self._same = 0
            self._last = None
            if self._failed >= self.fault_reads:
                return self._enter(now, STATE_UNKNOWN)
            return self._heartbeat(now)
        self._failed = 0
        if reading == self._last:
            self._same += 1
            if self._same >= self.stuck_reads:
                return self._enter(now, STATE_UNKNOWN)
            return self._heartbeat(now)
        self._same = 0
        self._last = reading
        if self._calibrating and self._calibrate(reading) and self.state == STATE_UNKNOWN:
            return self._enter(now, STATE_FREE)
        baseline = self.baseline
        if baseline is None:
            return self._heartbeat(now)
        deviation = _distance(reading, baseline)
        self.deviation = int(deviation)
        self.dz = int(reading[2] - baseline[2])
        parked = self._parked
        if deviation > self.enter_nt:
            wanted = STATE_OCCUPIED
        elif deviation < self.exit_nt:
            wanted = STATE_FREE
        elif parked is not None and _distance(reading, parked) > self.enter_nt:
            wanted = STATE_FREE  # the car left; drift during its stay is what remains
        else:
            wanted = self.state if self.state != STATE_UNKNOWN else None
        if self.state == STATE_FREE and deviation < self.exit_nt:
            for axis in range(3):
                baseline[axis] += (reading[axis] - baseline[axis]) / self.track_weight
        if parked is not None and deviation > self.enter_nt:
            for axis in range(3):  # follow the parked field while the car is surely there
                parked[axis] += (reading[axis] - parked[axis]) / 8
        if wanted is None or wanted == self.state:
            self._since = None
            return self._heartbeat(now)
        if self._since is None or wanted != self._wanted:
            self._since, self._wanted = now, wanted
        dwell = self.enter_s if wanted == STATE_OCCUPIED else self.exit_s
        if now - self._since < dwell:
            return self._heartbeat(now)
        if wanted == STATE_OCCUPIED:
            self._parked = [float(reading[0]), float(reading[1]), float(reading[2])]
        else:
            self._parked = None
            if deviation >= self.exit_nt:
                self.baseline = [float(reading[0]), float(reading[1]), float(reading[2])]
        return self._enter(now, wanted)

    def _calibrate(self, reading: tuple) -> bool:
        """Add a reading to the calibration; True when it just completed."""
        if self._count:
            mean = [total / self._count for total in self._sum]
            if _distance(reading, mean) > self.steady_nt:
                self._sum = [0.0, 0.0, 0.0]
                self._count = 0
        for axis in range(3):
            self._sum[axis] += reading[axis]
        self._count += 1
        if self._count < self.calibration_samples:
            return False
        self.baseline = [total / self._count for total in self._sum]
        self._calibrated = tuple(self.baseline)
        self._calibrating = False
        return True

    def _enter(self, now: int, state: int) -> int:
        self._since = None
        if state == self.state:
            return self._heartbeat(now)
        if self.state == STATE_OCCUPIED and self.changed_at is not None:
            self.occupied_s = now - self.changed_at
        self.state = state
        self.changed_at = now
        self._reported = now
        return EVENT_CHANGE

    def _heartbeat(self, now: int) -> int:
        if self._reported is None or now - self._reported >= self.heartbeat_s:
            self._reported = now
            return EVENT_HEARTBEAT
        return EVENT_NONE


def _distance(a: tuple | list, b: tuple | list) -> float:
    dx = a[0] - b[0]
    dy = a[1] - b[1]
    dz = a[2] - b[2]
    return sqrt(dx * dx + dy * dy + dz * dz)


def _saturated(reading: tuple, limit: int) -> bool:
    return abs(reading[0]) >= limit or abs(reading[1]) >= limit or abs(reading[2]) >= limit


class Reservations:
    """Reservation windows [start, until) of one bay, in Unix seconds, at most `capacity`."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self.windows = []

    def reserve(self, start: int, until: int, now: int) -> bool:
        """Add a window; False when it is empty, already over, or the list is full."""
        self.prune(now)
        if until <= start or until <= now or len(self.windows) >= self.capacity:
            return False
        self.windows.append((start, until))
        self.windows.sort()
        return True

    def release(self) -> None:
        """Cancel every reservation of the bay (the `release bay` command)."""
        self.windows = []

    def prune(self, now: int) -> None:
        self.windows = [window for window in self.windows if window[1] > now]

    def active(self, now: int) -> bool:
        return any(start <= now < until for start, until in self.windows)


def reservation_flag(state: int, reserved: bool) -> int:
    return FLAG_RESERVED_TAKEN if reserved and state == STATE_OCCUPIED else 0


def indicator(state: int, reserved: bool) -> int:
    """What the bay's indicator shows. A bay of unknown state is not offered as free."""
    if state == STATE_OCCUPIED:
        return INDICATOR_OCCUPIED
    if reserved:
        return INDICATOR_RESERVED
    if state == STATE_FREE:
        return INDICATOR_FREE
    return INDICATOR_OCCUPIED
