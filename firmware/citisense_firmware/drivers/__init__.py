"""Sensor and actuator drivers, one module per chip, named as in the board definitions.

hal_machine imports only the drivers its board definition names, on first use.
Each driver takes an opened bus (machine.I2C or machine.UART) and raises OSError when
the chip does not answer.
"""
