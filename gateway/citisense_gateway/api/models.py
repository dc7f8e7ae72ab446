"""Request and response bodies of the HTTP API; they are the OpenAPI document's schemas.

Times are Unix seconds (UTC), as on the wire and in the store; levels are percent.
Requests refuse unknown fields, so a typo is an error instead of a silent default.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from citisense_gateway.api.accounts import NAME_RULE, PASSWORD_MAX, PASSWORD_MIN

Role = Literal["viewer", "operator", "technician", "admin"]
NodeRole = Literal["lighting", "parking", "air"]
Status = Literal["online", "offline", "stale", "never-seen"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Numbers in request bodies are JSON numbers: `true` or "5" is an error, not 1 or 5.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
SCHEDULE_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
TIME_ZONES = sorted(z for z in available_timezones() if "/" in z or z == "UTC")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ---------------------------------------------------------------------------------
class FieldProblem(BaseModel):
    field: str = Field(description="where in the request, e.g. body.steps[1].at")
    problem: str


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong, in plain words")
    fields: list[FieldProblem] = Field(default_factory=list)


# -- accounts -------------------------------------------------------------------------------
class LoginRequest(Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class UserView(BaseModel):
    username: str
    role: Role
    created_at: float
    created_by: str


class LoginResponse(BaseModel):
    token: str = Field(description="send as `Authorization: Bearer <token>`")
    expires_at: float
    user: UserView


class UserCreate(Request):
    username: str = Field(pattern=NAME_RULE.pattern)
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    role: Role


class UserUpdate(Request):
    role: Role | None = None
    password: str | None = Field(default=None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class PasswordChange(Request):
    current: str = Field(min_length=1, max_length=PASSWORD_MAX)
    new: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class Done(BaseModel):
    ok: bool = True


# -- nodes ----------------------------------------------------------------------------------
class Reading(BaseModel):
    at: float
    values: dict[str, int | float | str | None] = Field(
        description="named values in their units (see the field names' suffixes)")
    flags: list[str]


class EventView(BaseModel):
    at: float
    event: str
    detail: dict[str, int | str]


class NodeScheduleView(BaseModel):
    name: str | None
    desired_version: int | None
    reported_version: int | None
    in_sync: bool


class NodeSummary(BaseModel):
    node_id: int
    role: NodeRole
    zone: str
    street: str
    label: str
    lat: float | None
    lon: float | None
    status: Status
    last_seen: float | None
    firmware: str
    schedule: NodeScheduleView | None = Field(description="lighting nodes only")
    bay_state: Literal["free", "occupied", "unknown"] | None = Field(
        description="parking nodes only")
    reserved_until: float | None


class CommandView(BaseModel):
    command_id: int
    node_id: int
    op: str
    args: Any
    state: Literal["pending", "sent", "acked", "failed", "expired"]
    result: str | None
    created_at: float
    created_by: str
    expires_at: float
    attempts: int
    sent_at: float | None
    done_at: float | None
    note: str


class BirthView(BaseModel):
    """A birth message the gateway accepted (its MAC checked with the node's key)."""

    boot: int
    seq: int
    received_at: float
    firmware: str
    role: str
    board: str
    config_hash: str = Field(description="hex of the first 8 bytes of the config's SHA-256")
    reset_cause: int = Field(description="code, as in protocols/SPEC.md")
    location: list[int] | None = Field(description="[lat, lon] in 1e-7 degrees, as reported")


class NodeDetail(NodeSummary):
    boot: int | None
    board: str
    config_hash: str
    reset_cause: str | None
    via: str
    health: dict[str, Any]
    last_telemetry: Reading | None
    events: list[EventView]
    commands: list[CommandView]


class ZoneView(BaseModel):
    zone: str
    lighting: int
    parking: int
    air: int


class NodeCommandRequest(Request):
    op: Literal["identify", "recalibrate", "reboot"]
    seconds: Int | None = Field(default=None, ge=1, le=600, description="identify: blink time")
    sensor: Int | None = Field(default=None, ge=0, le=6,
                               description="recalibrate: sensor number, 0 every sensor")


class NodeCreate(Request):
    """A new node in the registry; the gateway makes its key and broker password."""

    role: NodeRole
    node_id: Int | None = Field(default=None, ge=1, le=4294967295,
                                description="default: the next free id")
    zone: str = Field(default="", max_length=64, description="district or zone")
    street: str = Field(default="", max_length=64, description="street or group")
    lat: Float | None = Field(default=None, ge=-90, le=90, description="WGS 84 degrees")
    lon: Float | None = Field(default=None, ge=-180, le=180, description="WGS 84 degrees")
    label: str = Field(default="", max_length=128,
                       description="what the public sees, e.g. 'lamp 4, Kerkstraat'")


class NodeProvisioned(BaseModel):
    """The node's secrets, given out once: only this response ever carries them (the
    gateway keeps the key and a hash of the password). Write them to the node's config."""

    node_id: int
    role: NodeRole
    mac_key: str = Field(description="the node's 32-byte MAC key, hex")
    broker_user: str
    broker_password: str


# -- targets --------------------------------------------------------------------------------
class Target(Request):
    """Exactly one of zone, street or node_ids."""

    zone: str | None = Field(default=None, min_length=1, max_length=64)
    street: str | None = Field(default=None, min_length=1, max_length=64)
    node_ids: list[Annotated[Int, Field(ge=1, le=4294967295)]] | None = Field(
        default=None, min_length=1, max_length=1000)


# -- schedules ------------------------------------------------------------------------------
class Step(Request):
    at: str = Field(pattern=r"^(dusk|dawn|([01]?\d|2[0-3]):[0-5]\d)$",
                    description='"dusk", "dawn" or local time HH:MM')
    offset: Int | None = Field(default=None, ge=-720, le=720,
                               description="minutes from dusk or dawn (negative: before)")
    level: Int = Field(ge=0, le=100)


class ScheduleException(Request):
    first: dt.date = Field(description="first local day")
    last: dt.date = Field(description="last local day, inclusive")
    days: Literal["all"] | list[Weekday] = "all"
    priority: Int = Field(default=0, ge=0, le=255)
    steps: list[Step] = Field(min_length=1, max_length=8)


class ScheduleDefinition(Request):
    timezone: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="IANA zone, e.g. Europe/Amsterdam; absent: UTC")
    failsafe: Int | None = Field(default=None, ge=0, le=100,
                                 description="level when the schedule cannot be followed")
    steps: list[Step] = Field(min_length=1, max_length=8)
    exceptions: list[ScheduleException] | None = Field(default=None, min_length=1, max_length=4)


    @field_validator("timezone")
    @classmethod
    def known_zone(cls, zone: str | None) -> str | None:
        if zone is not None and zone not in TIME_ZONES:
            raise ValueError(f"unknown time zone {zone!r}; use a name such as Europe/Amsterdam")
        return zone


class ScheduleCreate(ScheduleDefinition):
    name: str = Field(pattern=SCHEDULE_NAME)


class ScheduleView(BaseModel):
    name: str
    version: int
    created_at: float
    created_by: str
    definition: dict[str, Any]
    wire: dict[str, Any] = Field(description="the schedule object as sent to nodes")
    versions: list[int]
    assigned: int = Field(description="nodes this schedule is assigned to")


class Validation(BaseModel):
    valid: bool
    wire: dict[str, Any]


class PreviewRequest(Request):
    definition: ScheduleDefinition | None = Field(default=None, description="unsaved schedule")
    name: str | None = Field(default=None, pattern=SCHEDULE_NAME,
                             description="saved schedule (latest version unless `version`)")
    version: Int | None = Field(default=None, ge=1, le=4294967295)
    node_id: Int | None = Field(default=None, ge=1, le=4294967295)
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    lat: Float | None = Field(default=None, ge=-90, le=90)
    lon: Float | None = Field(default=None, ge=-180, le=180)
    date: dt.date | None = Field(default=None,
                                 description="the evening of this local date; default tonight")


class LevelChange(BaseModel):
    at: float
    level: int


class PreviewView(BaseModel):
    date: str
    timezone: str
    lat: float
    lon: float
    start: float
    end: float
    dusk: float | None
    dawn: float | None
    changes: list[LevelChange]


class AssignResult(BaseModel):
    schedule: str
    version: int
    nodes: list[int]
    commands: list[int]


class RolloutNode(BaseModel):
    node_id: int
    zone: str
    street: str
    status: Status
    desired_version: int | None
    reported_version: int | None
    command_id: int | None
    command_state: str | None
    result: str | None
    state: Literal["running", "pending", "sent", "acked", "failed", "expired", "unknown"] = \
        Field(description="running: the node reports the desired version; otherwise the "
                          "state of the newest schedule command")


class RolloutView(BaseModel):
    schedule: str
    latest_version: int
    summary: dict[str, int]
    nodes: list[RolloutNode]


# -- overrides ------------------------------------------------------------------------------
class OverrideRequest(Target):
    level: Int = Field(ge=0, le=100)
    duration_s: Int = Field(ge=0, le=86400, description="0 ends the active override")
    note: str = Field(default="", max_length=200)


class OverrideResult(BaseModel):
    nodes: list[int]
    commands: list[int]
    ends_at: float | None


class OverrideView(BaseModel):
    node_id: int
    zone: str
    street: str
    level: int
    started_at: float
    ends_at: float
    command_id: int
    command_state: str
    created_by: str


# -- parking --------------------------------------------------------------------------------
class ParkingSummary(BaseModel):
    zone: str
    bays: int
    free: int
    occupied: int
    unknown: int
    reserved: int


class BayView(BaseModel):
    node_id: int
    label: str
    street: str
    lat: float | None
    lon: float | None
    status: Status
    state: Literal["free", "occupied", "unknown"]
    reserved_until: float | None


class OccupancyPoint(BaseModel):
    at: float
    free: int
    occupied: int
    unknown: int


class ParkingZoneView(BaseModel):
    summary: ParkingSummary
    bays: list[BayView]
    history: list[OccupancyPoint]


class ReservationRequest(Request):
    node_id: Int = Field(ge=1, le=4294967295)
    start: Int | None = Field(default=None, ge=0, le=4294967295,
                              description="Unix time; default now")
    until: Int = Field(ge=0, le=4294967295)


class ReservationView(BaseModel):
    node_id: int
    zone: str
    label: str
    start: float | None
    until: float
    command_id: int | None
    command_state: str | None
    created_by: str | None


class ReleaseResult(BaseModel):
    node_id: int
    command_id: int


# -- air quality ----------------------------------------------------------------------------
class AirIndexView(BaseModel):
    node_id: int
    zone: str
    street: str
    label: str
    lat: float | None
    lon: float | None
    level: int = Field(description="European Air Quality Index 1..6; 0 no valid reading")
    name: str | None
    driver: str | None
    pm25_24h: float | None
    pm10_24h: float | None
    no2_1h: float | None
    at: float | None
    flags: list[str]


class AirPoint(BaseModel):
    at: float
    pm25: float | None
    pm10: float | None
    no2: float | None
    temp: float | None
    rh: float | None
    pressure: float | None
    flags: list[str]


class AirSeries(BaseModel):
    node_id: int
    points: list[AirPoint]


# -- alarms and audit -----------------------------------------------------------------------
class AlarmView(BaseModel):
    kind: Literal["node_offline", "lamp_fault", "sensor_fault"]
    node_id: int
    role: NodeRole
    zone: str
    street: str
    label: str
    at: float | None = Field(description="time of the newest message showing it: the event "
                                         "that raised it, a telemetry reading, the last "
                                         "message of an offline node")
    detail: str


class AuditView(BaseModel):
    at: float
    user: str
    action: str
    target: str
    details: Any
