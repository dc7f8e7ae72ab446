"""citisense: citisense_gateway."""
