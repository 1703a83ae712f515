"""SHF (Zhang et al., "Robust Face Detection via Learning Small Faces on Hard Images").

``network.py``: VGG16 with one stride-8 map and the dilated head; ``objective.py``: IoU matching and OHEM.
Registered here, torch-free.
"""

from __future__ import annotations

from dataclasses import replace

from ...spec import AnchorSpec, ModelSpec, PyramidScale, TestTimeSpec
from ..registry import IMAGENET_INPUT, ModelEntry, forward_to, register

register(ModelEntry(
    name="shf", family="shf", builder="shf.network:SHF", kwargs={}, objective="shf.objective:SHFObjective",
    spec=ModelSpec(
        name="shf", input=replace(IMAGENET_INPUT, size_multiple=16), anchors=AnchorSpec((8,), ((16.0, 32.0, 64.0),)),
        variances=(1.0, 1.0), max_out_background=0, nms_iou=0.3,
        test_time=TestTimeSpec(tuple(PyramidScale(short_side=s) for s in (100, 300, 600, 1000, 1400)),
                               flip=True, voting_iou=0.4)),
    description="SHF: VGG16 single stride-8 map, dilated head (1, 2, 4), hard image mining"))

__getattr__ = forward_to(__name__)
