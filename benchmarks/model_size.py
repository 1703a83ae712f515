"""Parameters and conv multiply-adds of every model (all EXTD variants, SRN, HR, SHF) at 640x480 and 640x640
(one pass; HR and SHF run several per image at test time).

Counts use torch's FlopCounterMode (conv/matmul MACs = FLOPs / 2); the reference column holds the
analytic counts of shared/docs/models.md where it gives one.
"""

from __future__ import annotations

import argparse

from edgeface.models.complexity import count_macs, count_parameters
from edgeface.models.registry import create_model, get_entry, model_names

from .machine import describe_machine, markdown_table, write_results

SIZES = ((640, 480), (640, 640))
# models.md [calc]: (params, GMACs 640x480, GMACs 640x640). Its EXTD-32/48 figures assume a stem as
# wide as the blocks; the released checkpoints have a 64-channel stem at every width.
REFERENCE = {"extd64": (162_352, 10.06, 13.41), "extd48": (98_736, 5.81, 7.75), "extd32": (60_603, 3.88, 5.17),
             "srn": (53_400_000, 189, None), "hr-res101": (27_600_000, 43, None), "shf": (17_900_000, 115, None)}


def measure(names: list[str]) -> list[dict]:
    models = [(name, get_entry(name).description, create_model(name)) for name in names]
    for width in (32, 48):  # the layout models.md counted, to show where its EXTD-32/48 figures come from
        if f"extd{width}" in names:
            models.append((f"extd{width} ({width}-ch stem)", "models.md's analytic layout, not released",
                           create_model(f"extd{width}", stem_channels=width)))
    rows = []
    for name, description, model in models:
        row = {"model": name, "description": description, "params": count_parameters(model)}
        for w, h in SIZES:
            row[f"gmacs_{w}x{h}"] = count_macs(model, w, h) / 1e9
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=model_names(), help="registry names (default: every model)")
    args = parser.parse_args(argv)
    rows = measure(args.models)
    table_rows = []
    for r in rows:
        ref = REFERENCE.get(r["model"].split(" ")[0])
        ref_text = " / ".join("-" if v is None else f"{v:,}" if isinstance(v, int) and v > 1000 else str(v)
                              for v in ref) if ref else ""
        table_rows.append([r["model"], f"{r['params']:,}", f"{r['gmacs_640x480']:.2f}", f"{r['gmacs_640x640']:.2f}",
                           ref_text])
    table = markdown_table(["model", "params", "GMACs 640x480", "GMACs 640x640",
                            "models.md (params / 480 / 640)"], table_rows)
    print(table)
    path = write_results("model_size", {"machine": describe_machine(), "rows": rows}, table)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
