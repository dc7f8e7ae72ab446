"""The HIL suite's machinery: the rig (a board and what it can observe and stimulate) and
the station (broker, gateway and node registry the board talks to). conftest.py turns
them into the `board` and `station` fixtures."""
