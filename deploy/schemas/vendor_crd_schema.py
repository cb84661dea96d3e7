"""Vendor one CustomResourceDefinition's OpenAPI schema as JSON, for tests/repo/test_deploy.py.

The schemas of custom resources (KEDA's ScaledObject, prometheus-operator's ServiceMonitor) are not in
kubernetes-validate, so the test validates those resources against the CRD's own schema, kept here.
Update one after bumping the operator version the manifests target:

    python deploy/schemas/vendor_crd_schema.py CRD.yaml SOURCE > deploy/schemas/NAME.json

SOURCE says where the CRD came from (repository, tag, path); it is stored with the schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(crd_path: str, source: str) -> int:
    """Print the storage version's schema of the CRD in ``crd_path`` as JSON, with ``source`` recorded."""
    (crd,) = [doc for doc in yaml.safe_load_all(Path(crd_path).read_text()) if doc]
    assert crd["kind"] == "CustomResourceDefinition", crd["kind"]
    spec = crd["spec"]
    (version,) = [v for v in spec["versions"] if v.get("storage")]
    vendored = {
        "source": source,
        "apiVersion": f"{spec['group']}/{version['name']}",
        "kind": spec["names"]["kind"],
        "openAPIV3Schema": version["schema"]["openAPIV3Schema"],
    }
    json.dump(vendored, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
