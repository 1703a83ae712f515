"""edgeface: face detection for edge devices and CPUs.

``import edgeface`` and ONNX inference need only NumPy, OpenCV and ONNX Runtime; torch is needed
for checkpoints, training and export.
"""

from .core.detections import Detections, Face
from .core.image import read_image
from .detector import Detector
from .errors import BackendError, EdgefaceError, ImageError, ModelFileError, OptionError
from .spec import ModelSpec

__version__ = "0.1.0"

__all__ = [
    "BackendError", "Detections", "Detector", "EdgefaceError", "Face", "ImageError", "ModelFileError", "OptionError",
    "ModelSpec", "read_image", "__version__",
]
