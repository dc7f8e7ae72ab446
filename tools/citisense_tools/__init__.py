"""citisense: citisense_tools."""
