"""The citisense wire contract: CBOR codec, serial framing, message authentication.

Runs unmodified on MicroPython (ESP32) and CPython: no typing imports, no
CPython-only modules.
"""
