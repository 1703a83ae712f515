"""Dataset readers: one record type for every annotation format."""

from .imglab import read_imglab
from .records import FaceRecord

__all__ = ["FaceRecord", "read_imglab"]
