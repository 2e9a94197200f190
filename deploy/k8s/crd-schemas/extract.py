"""Turn one upstream CustomResourceDefinition (YAML on stdin) into the vendored schema file.

Usage: git show <tag>:<crd.yaml> | python extract.py "<source>" > <crd file name>.json

Only each served version's openAPIV3Schema is kept (the full Kyverno CRD is 1.4 MB of YAML);
tests/unit/test_k8s_manifests.py validates rendered manifests against these files.
"""

import json
import sys

import yaml


def main() -> None:
    crd = yaml.safe_load(sys.stdin)
    spec = crd["spec"]
    out = {
        "source": sys.argv[1],
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "versions": {
            v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"] if v.get("served")
        },
    }
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)


if __name__ == "__main__":
    main()
