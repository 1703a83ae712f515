"""SRN (Chi et al., "Selective Refinement Network for High Performance Face Detection").

``network.py``: the torch module; ``objective.py``: two-step focal loss with STC / STR. Registered here,
torch-free.
"""

from __future__ import annotations

from ...spec import AnchorSpec, ModelSpec, TestTimeSpec
from ..registry import IMAGENET_INPUT, ModelEntry, forward_to, register

STRIDES = (4, 8, 16, 32, 64, 128)

register(ModelEntry(
    name="srn", family="srn", builder="srn.network:SRN", kwargs={}, objective="srn.objective:SRNObjective",
    spec=ModelSpec(
        name="srn", input=IMAGENET_INPUT,
        anchors=AnchorSpec(STRIDES, tuple((2.0 * s, 2.0 * 2**0.5 * s) for s in STRIDES), (1.25,)),
        variances=(1.0, 1.0), max_out_background=0, nms_iou=0.4,
        test_time=TestTimeSpec.from_scales((0.5, 1.0, 1.5), flip=True, voting_iou=0.5)),
    description="SRN: ResNet-50 + C6/C7, selective two-step classification and regression, RFE head"))

__getattr__ = forward_to(__name__)
