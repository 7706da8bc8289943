"""Validates an OpenAPI document read from stdin with openapi-spec-validator
(written by others, from the OpenAPI Initiative's schemas). Driven by
tests/openapi.rs.

    validate_openapi.py < openapi.json

Prints the version it validated against and exits 0, or prints every error
and exits 1.
"""

import json
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator

spec = json.load(sys.stdin)
errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
for error in errors:
    path = "/".join(str(p) for p in error.absolute_path)
    print(f"{path}: {error.message}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"valid OpenAPI 3.1: {len(spec.get('paths', {}))} paths")
