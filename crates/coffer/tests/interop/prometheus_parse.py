"""Reads a Prometheus text-format page on stdin with prometheus_client's own
parser and prints its families as JSON: {name: {"type", "samples": [[sample
name, labels, value], ...]}}. A page the parser refuses exits non-zero."""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    families = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        samples = []
        for s in family.samples:
            value = s.value if math.isfinite(s.value) else str(s.value)
            samples.append([s.name, s.labels, value])
        families[family.name] = {"type": family.type, "samples": samples}
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
