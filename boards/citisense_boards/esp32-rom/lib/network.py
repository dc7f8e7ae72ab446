# mypy: ignore-errors
# network for the virtual ESP32: a Wi-Fi station whose access point is part of
# the simulated street (it can be down, or refuse wrong credentials).
import binascii

import _vboard
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)
AUTH_OPEN = const(0)
AUTH_WPA2_PSK = const(3)

_hostname = "esp32"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    def __init__(self, interface_id=STA_IF):
        self._if = interface_id
        self._ap_active = False

    def active(self, is_active=None):
        if self._if == AP_IF:
            if is_active is not None:
                self._ap_active = bool(is_active)
            return self._ap_active
        return _vboard.wlan_active(-1 if is_active is None else (1 if is_active else 0))

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF or not _vboard.wlan_active(-1):
            raise OSError("Wifi Not Started")
        _vboard.wlan_connect(ssid, key or "")

    def disconnect(self):
        _vboard.wlan_disconnect()

    def isconnected(self):
        return self._if == STA_IF and _vboard.wlan_status() == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return _vboard.wlan_rssi()
        if param is not None:
            raise ValueError("unknown status param")
        return _vboard.wlan_status() if self._if == STA_IF else STAT_IDLE

    def ifconfig(self, config=None):
        if not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        host = binascii.unhexlify(_vboard.unique_id())[-1] % 250 + 2
        return (f"10.42.0.{host}", "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def scan(self):
        ssid = _vboard.wlan_ssid()
        if not ssid:
            return []
        bssid = b"\x02\x00\x00\x00\x00\x01"
        return [(ssid.encode(), bssid, 6, _vboard.wlan_rssi(), AUTH_WPA2_PSK, False)]

    def config(self, *args, **kwargs):
        if kwargs:
            if "hostname" in kwargs:
                hostname(kwargs["hostname"])
            return None
        param = args[0]
        if param == "mac":
            return binascii.unhexlify(_vboard.unique_id())
        if param in ("essid", "ssid"):
            return _vboard.wlan_ssid()
        if param in ("hostname", "dhcp_hostname"):
            return _hostname
        if param == "txpower":
            return 20
        raise ValueError("unknown config param")
