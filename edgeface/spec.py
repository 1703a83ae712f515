"""The model spec: everything a runtime needs to turn a frame into faces with a given network.

Every edgeface artifact carries one (checkpoints as a dict entry, ONNX files in `metadata_props`
under :data:`SPEC_KEY`), so ``Detector(path)`` never guesses the input convention, anchor layout
or box coding.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

SPEC_KEY = "edgeface.spec"
TENSOR_NAMES = ("input", "loc", "conf")  # an export's network input and outputs (ONNX graphs, TensorRT engines)
INPUT, LOC, CONF = TENSOR_NAMES
SPEC_VERSION = 5  # 2: explicit template shapes and the test-time strategy; 3: input.min_side; 4: size_multiple;
# 5: box_down
# keys added since version 4 that older readers act as if they held a neutral value: the version that added each,
# and that value. A spec leaving them neutral is written without them, in the version before.
NEUTRAL_SINCE: dict[str, tuple[int, Any]] = {"box_down": (5, 0.0)}


@dataclass(frozen=True)
class InputSpec:
    """How a uint8 frame becomes the network input: ``(pixel[channel_order] - mean) / std``, CHW float32."""

    channel_order: str = "RGB"  # order the network expects; frames arrive as OpenCV BGR
    mean: tuple[float, float, float] = (123.0, 117.0, 104.0)  # in `channel_order`
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # None: any size (fully convolutional, anchors follow the feature maps); (w, h): letterbox to it.
    size: Optional[tuple[int, int]] = None
    batch: Optional[int] = None  # None: any batch size; else the fixed batch of a static-shape export
    # frames run at their own size whose longest side is below this are upscaled to it (one pass: small faces
    # reach the smallest anchors); None: never upscaled
    min_side: Optional[int] = None
    # inputs of any size are padded at the right and bottom to a multiple of this: the network's coarsest stride,
    # where each upsampled feature map lines up with the finer one it is added to (128 suits every family here)
    size_multiple: int = 128


@dataclass(frozen=True)
class AnchorSpec:
    """Anchors (or templates), one set per detection level, centred at ``(j + 0.5) * stride`` pixels.

    ``sizes[k]`` and ``ratios`` give ``len(sizes[k]) * len(ratios)`` anchors per cell on level k,
    ratios are height / width, unless ``shapes[k]`` lists the cell's ``(w, h)`` shapes explicitly
    (HR's clustered templates). A level of stride ``2**k`` has the feature-map size reached by k
    halvings ``n -> ceil(n / 2)`` of the input size (what a 3x3, pad-1, stride-2 conv does).
    """

    strides: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    sizes: tuple[tuple[float, ...], ...] = ((16,), (32,), (64,), (128,), (256,), (512,))
    ratios: tuple[float, ...] = (1.0,)
    shapes: Optional[tuple[tuple[tuple[float, float], ...], ...]] = None

    def cell_shapes(self, level: int) -> tuple[tuple[float, float], ...]:
        """The ``(w, h)`` of each anchor in one cell of `level`, in output order."""
        if self.shapes is not None:
            return self.shapes[level]
        return tuple((size / math.sqrt(r), size * math.sqrt(r)) for size in self.sizes[level] for r in self.ratios)

    def per_cell(self, level: int) -> int:
        """How many anchors one cell of `level` has."""
        return len(self.cell_shapes(level))


@dataclass(frozen=True)
class PyramidScale:
    """One pass of a test-time pyramid."""

    scale: float = 1.0  # resize factor of the frame
    short_side: Optional[int] = None  # or: resize the frame so its short side has this many pixels
    anchors: Optional[tuple[int, ...]] = None  # indices within a cell active in this pass (None: all)


@dataclass(frozen=True)
class TestTimeSpec:
    """A model's test-time strategy: passes over a pyramid (and mirrors), merged by NMS or box voting."""

    __test__ = False  # not a pytest test class, despite its name

    pyramid: tuple[PyramidScale, ...] = (PyramidScale(),)
    flip: bool = False
    voting_iou: Optional[float] = None  # box voting over overlaps >= this IoU instead of plain NMS

    @property
    def single_pass(self) -> bool:
        """Whether this strategy is one pass at the frame's own scale, merged by plain NMS."""
        return self.pyramid == (PyramidScale(),) and not self.flip and not self.voting_iou

    @classmethod
    def from_scales(cls, scales: tuple[float, ...] = (1.0,), flip: bool = False,
                    voting_iou: Optional[float] = None) -> TestTimeSpec:
        """One pass per resize factor in `scales` (each mirrored too with `flip`), merged by box voting over
        overlaps of at least `voting_iou` (None: plain NMS). E.g. ``from_scales((0.5, 1.0, 2.0), flip=True)``."""
        return cls(tuple(PyramidScale(float(s)) for s in scales), flip, voting_iou)


@dataclass(frozen=True)
class ModelSpec:
    """Model spec carried by every artifact. Coordinates are pixels of the network input."""

    name: str  # registry name, e.g. "extd64" or "extd32-ssd-leaky"
    input: InputSpec = field(default_factory=InputSpec)
    anchors: AnchorSpec = field(default_factory=AnchorSpec)
    box_coding: str = "ssd"  # SSD centre-offset coding
    variances: tuple[float, float] = (0.1, 0.2)
    # every decoded box moves down this share of its own height (negative: up): a dataset's label convention,
    # which sits higher or lower on the face than the one the network learned (`edgeface move-boxes`)
    box_down: float = 0.0
    score: str = "softmax2"  # outputs are (background, face) logits; max-out background is in the graph
    max_out_background: int = 3  # background logits max-pooled on the first level (documentation)
    score_threshold: float = 0.5
    nms_iou: float = 0.3
    max_detections: int = 750
    pre_nms_top_k: int = 5000  # best-scoring candidates that enter NMS
    test_time: TestTimeSpec = field(default_factory=TestTimeSpec)  # what Detector runs by default
    model_version: str = "0"
    # the schema version it was read from; informative only: specs that say the same are equal
    spec_version: int = field(default=SPEC_VERSION, compare=False)

    def with_input_shape(self, size: Optional[tuple[int, int]], batch: Optional[int] = None) -> ModelSpec:
        """Copy for an artifact with a fixed input ``size = (w, h)`` and/or batch (None: dynamic)."""
        return replace(self, input=replace(self.input, size=(size[0], size[1]) if size else None, batch=batch))

    def with_min_side(self, min_side: Optional[int]) -> ModelSpec:
        """Copy whose frames smaller than `min_side` (longest side) run upscaled to it (None: own size)."""
        return replace(self, input=replace(self.input, min_side=min_side))

    def to_dict(self) -> dict[str, Any]:
        """The spec in the oldest schema that holds it: keys of :data:`NEUTRAL_SINCE` at their neutral values are
        left out (an edgeface of that older version runs the file as this one does), and ``spec_version`` is the
        newest version among the keys kept, so an older edgeface refuses a spec it would misread with "upgrade
        edgeface", whatever version the spec was read from."""
        data = asdict(self)
        version = min(since for since, _ in NEUTRAL_SINCE.values()) - 1  # what a spec without those keys is
        for key, (since, neutral) in NEUTRAL_SINCE.items():
            if data[key] == neutral:
                del data[key]
            else:
                version = max(version, since)
        return {**data, "spec_version": version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> ModelSpec:
        d = dict(data)
        inp = dict(d.pop("input", {}))
        if inp.get("size") is not None:
            inp["size"] = tuple(inp["size"])
        for key in ("mean", "std"):
            if key in inp:
                inp[key] = tuple(inp[key])
        anc = dict(d.pop("anchors", {}))
        if "sizes" in anc:
            anc["sizes"] = tuple(tuple(s) for s in anc["sizes"])
        for key in ("strides", "ratios"):
            if key in anc:
                anc[key] = tuple(anc[key])
        if anc.get("shapes") is not None:
            anc["shapes"] = tuple(tuple((float(w), float(h)) for w, h in level) for level in anc["shapes"])
        if "variances" in d:
            d["variances"] = tuple(d["variances"])
        tt = dict(d.pop("test_time", {}))
        if "pyramid" in tt:
            tt["pyramid"] = tuple(PyramidScale(**{**p, "anchors": None if p.get("anchors") is None
                                                  else tuple(p["anchors"])}) for p in tt["pyramid"])
        return cls(input=InputSpec(**inp), anchors=AnchorSpec(**anc), test_time=TestTimeSpec(**tt), **d).checked()

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """The spec a file carries, or ValueError saying what is wrong with it: not a spec, one from a newer
        edgeface, a key or value of the wrong type, or a value the runtime cannot use (:meth:`checked`)."""
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError("not an edgeface model spec (no 'name')")
        version = data.get("spec_version", 0)
        if not isinstance(version, int) or version > SPEC_VERSION:
            raise ValueError(f"model spec version {version!r} is newer than this edgeface understands "
                             f"({SPEC_VERSION}); upgrade edgeface")
        try:
            return cls._parse(data)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed model spec ({exc})") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the model spec is not JSON ({exc})") from None
        return cls.from_dict(data)

    def checked(self) -> ModelSpec:
        """This spec, or ValueError naming the first value the runtime cannot use."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        def positive(values: Any) -> bool:
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in values)

        inp, anc = self.input, self.anchors
        need(isinstance(self.name, str) and bool(self.name), f"name must be a model's name, got {self.name!r}")
        need(inp.channel_order in ("RGB", "BGR"), f"input.channel_order is RGB or BGR, got {inp.channel_order!r}")
        need(len(inp.mean) == 3 and all(math.isfinite(m) for m in inp.mean), f"input.mean is 3 numbers, got {inp.mean}")
        need(len(inp.std) == 3 and positive(inp.std), f"input.std is 3 numbers above 0, got {inp.std}")
        need(inp.size is None or (len(inp.size) == 2 and positive(inp.size)), f"input.size is (w, h), got {inp.size}")
        for key in ("batch", "min_side"):
            need(getattr(inp, key) is None or positive([getattr(inp, key)]), f"input.{key} must be above 0")
        need(positive([inp.size_multiple]), f"input.size_multiple must be above 0, got {inp.size_multiple}")
        need(bool(anc.strides) and positive(anc.strides), f"anchors.strides are above 0, got {anc.strides}")
        levels = anc.shapes if anc.shapes is not None else anc.sizes
        need(len(levels) == len(anc.strides), f"anchors: {len(levels)} levels of anchor sizes for "
                                              f"{len(anc.strides)} strides")
        sizes = [shape for level in anc.shapes for shape in level] if anc.shapes is not None else anc.sizes
        need(all(positive(size) for size in sizes) and positive(anc.ratios), "anchor sizes are above 0")
        need(self.box_coding == "ssd" and self.score == "softmax2", f"this edgeface decodes SSD boxes and two-class "
             f"softmax scores, not {self.box_coding!r} / {self.score!r}; upgrade edgeface")
        need(len(self.variances) == 2 and positive(self.variances), "variances are 2 numbers above 0")
        need(positive([self.pre_nms_top_k]), f"pre_nms_top_k must be above 0, got {self.pre_nms_top_k}")
        from .options import (  # (options imports this module)
            check_box_shift,
            check_max_detections,
            check_nms_iou,
            check_score_threshold,
            check_test_time,
        )

        check_score_threshold(self.score_threshold)  # the rules Detector's options follow
        check_nms_iou(self.nms_iou)
        check_max_detections(self.max_detections)
        check_test_time(self.test_time)
        check_box_shift(self.box_down, "box_down")  # the rule `edgeface move-boxes --down` follows
        return self
