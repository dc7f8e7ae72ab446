"""`python -m citisense_gateway.api` prints the OpenAPI document."""

import json

from citisense_gateway.api.app import document

print(json.dumps(document(), indent=2))
