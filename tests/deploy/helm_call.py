"""One Helm SDK call (helm-python-sdk) in a process of its own: reads a JSON request on stdin,
writes a JSON reply on stdout.

Why a process: the SDK embeds Go's runtime, which crashes (SIGSEGV) when the signal handlers of
native libraries already loaded into the test process (OpenVINO, ONNX Runtime, torch, ...) meet
its own; alone in a process it is stable.

    {"op": "lint", "chart": DIR, "values": {...}, "kube_version": "v1.29.0", "namespace": NS}
    {"op": "render", "chart": DIR, "values": {...}, "name": RELEASE, "namespace": NS}
-> {"result": ...} or {"helm_error": "message"}
"""
from __future__ import annotations

import json
import sys

import helm_python as helm


def main() -> None:
    request = json.load(sys.stdin)
    try:
        if request["op"] == "lint":
            result = helm.lint(request["chart"], request["values"], strict=True, kube_version=request["kube_version"],
                               namespace=request["namespace"])
        else:
            with helm.Chart.load(request["chart"]) as chart:
                result = chart.render(request["values"], name=request["name"], namespace=request["namespace"])
        json.dump({"result": result}, sys.stdout)
    except helm.HelmError as exc:
        json.dump({"helm_error": str(exc)}, sys.stdout)


if __name__ == "__main__":
    main()
