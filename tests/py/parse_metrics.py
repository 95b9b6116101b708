"""Parses OpenMetrics text from stdin with the Prometheus project's own parser and prints every
sample as JSON: {"samples": {"name{label=\"v\",...}": value}, "types": {"family": "counter"}}.
Labels are sorted by name. A malformed exposition makes the parser raise (exit code 1)."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
samples = {}
types = {}
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"samples": samples, "types": types}))
