"""citisense: citisense_firmware."""
