"""EXTD (Yoo et al., "EXTD: Extremely Tiny Face Detector via Iterative Filter Reuse"): all 18 variants of the paper.

``network.py``: the torch module (shared-iterative backbone, FPN or SSD head); ``objective.py``: S3FD matching
+ multibox loss. Registered here, torch-free.
"""

from __future__ import annotations

from ...spec import ModelSpec
from ..registry import ModelEntry, forward_to, register

ACTIVATIONS = {"prelu": "PReLU", "leaky": "Leaky-ReLU (0.25)", "relu": "ReLU"}

for width in (32, 48, 64):
    for head in ("fpn", "ssd"):
        for activation, act_name in ACTIVATIONS.items():
            suffix = ("-ssd" if head == "ssd" else "") + ("" if activation == "prelu" else f"-{activation}")
            name = f"extd{width}{suffix}"
            released = " (the authors' released layout)" if (head, activation) == ("fpn", "prelu") else ""
            register(ModelEntry(
                name=name, family="extd", builder="extd.network:EXTD",
                kwargs={"width": width, "head": head, "activation": activation},
                spec=ModelSpec(name=name), objective="extd.objective:SSDObjective",
                description=f"EXTD width {width}, {head.upper()} head, {act_name}{released}"))

__getattr__ = forward_to(__name__)
