"""HR (Hu & Ramanan, "Finding Tiny Faces"): ResNet res3 + res4 hypercolumn, clustered templates, pyramid.

``network.py``: the torch module; ``objective.py``: the official sampling and losses; ``templates.py``: the
template clustering (NumPy). Registered here, torch-free.
"""

from __future__ import annotations

from dataclasses import replace

from ...spec import AnchorSpec, ModelSpec, PyramidScale, TestTimeSpec
from ..registry import IMAGENET_INPUT, ModelEntry, forward_to, register
from .templates import WIDER_TRAIN_TEMPLATES

_t = WIDER_TRAIN_TEMPLATES
A_ONLY, A_AND_B = tuple(_t.a_set), tuple(sorted(_t.a_set + _t.b_set))

for depth in (101, 50):
    register(ModelEntry(
        name=f"hr-res{depth}", family="hr", builder="hr.network:HR", kwargs={"depth": depth},
        objective="hr.objective:HRObjective",
        spec=ModelSpec(
            name=f"hr-res{depth}", input=replace(IMAGENET_INPUT, size_multiple=16),  # res4 (stride 16) upsampled
            anchors=AnchorSpec((8,), shapes=(_t.shapes,)),
            variances=(1.0, 1.0), max_out_background=0, nms_iou=0.3,
            # the pruned A+B model: A templates over the pyramid, B templates only on the 2x image
            test_time=TestTimeSpec(tuple(PyramidScale(s, anchors=A_ONLY) for s in (0.25, 0.5, 1.0))
                                   + (PyramidScale(2.0, anchors=A_AND_B),))),
        description=f"HR (Tiny Faces): ResNet-{depth} res3+res4 hypercolumn, 25 clustered templates, pyramid"))

__getattr__ = forward_to(__name__)
