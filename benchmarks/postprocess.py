"""Post-processing under each model family's own test-time strategy when the network fires on every anchor
(an untrained model, or a hostile input): the worst case of decode, per-pass NMS, the merge and box voting.

The network is a stand-in that returns, for any input, a face logit in [2, 8] at every anchor and small random
box offsets, so only edgeface's own pre- and post-processing is timed (median of `--runs`), with the number of
passes and of the candidates that reach the merge. Baseline in the same run: the same strategy on a network
that finds nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgeface.spec import ModelSpec

from .machine import at_least, describe_machine, markdown_table, write_results

MODELS = ("extd64", "hr-res50", "srn", "shf")


class FiresEverywhere:
    """A backend stand-in for `spec`: every anchor scores high (`fire`) or nothing does. ``seconds`` holds the
    time of each of its runs (the stand-in's share of a detector's time)."""

    name = "stand-in"

    def __init__(self, spec: ModelSpec, fire: bool = True, seed: int = 0):
        self.spec, self.fire, self.rng, self.passes = spec, fire, np.random.default_rng(seed), 0
        self.seconds: list[float] = []

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        outputs = self._outputs(batch)
        self.seconds.append(time.perf_counter() - start)
        return outputs

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from edgeface.core.anchors import generate_anchors

        self.passes += 1
        n = len(generate_anchors(self.spec.anchors, batch.shape[3], batch.shape[2]))
        conf = np.zeros((len(batch), n, 2), np.float32)
        conf[..., 1] = self.rng.uniform(2, 8, (len(batch), n)) if self.fire else -10.0
        loc = self.rng.normal(0, 0.3, (len(batch), n, 4)).astype(np.float32)
        return loc, conf


def time_strategy(model: str, size: tuple[int, int], fire: bool, runs: int) -> dict:
    from edgeface import Detector
    from edgeface.models.registry import default_spec

    backend = FiresEverywhere(default_spec(model), fire)
    detector = Detector(backend)
    frame = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    totals, faces = [], 0
    for _ in range(runs):
        backend.seconds.clear()
        start = time.perf_counter()
        faces = len(detector(frame))
        totals.append(time.perf_counter() - start - sum(backend.seconds))  # edgeface's share: all but the stand-in
    return {"model": model, "size": f"{size[0]}x{size[1]}", "fires": fire, "passes": backend.passes // runs,
            "faces": faces, "edgeface_ms": 1000 * float(np.median(totals))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"], help="WxH (default: %(default)s)")
    parser.add_argument("--runs", type=at_least(1), default=3)
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        for text in args.sizes:
            width, height = (int(v) for v in text.split("x"))
            size = (width, height)
            for fire in (False, True):
                row = time_strategy(model, size, fire, args.runs)
                rows.append(row)
                print(f"{model:9s} {row['size']:8s} {'fires' if fire else 'silent':6s} {row['passes']:2d} passes  "
                      f"{row['edgeface_ms']:8.1f} ms  {row['faces']} faces", flush=True)
    table = markdown_table(["model (own test-time strategy)", "frame", "network", "passes", "faces",
                            "pre + post ms (median)"],
                           [[r["model"], r["size"], "fires on every anchor" if r["fires"] else "finds nothing",
                             r["passes"], r["faces"], f"{r['edgeface_ms']:.1f}"] for r in rows])
    print()
    print(table)
    payload = {"machine": describe_machine(), "runs": args.runs, "rows": rows}
    print(f"\nwritten: {write_results('postprocess_worst_case', payload, table)}")


if __name__ == "__main__":
    main()
