"""Round a codebook artifact's float values to float16 (what `quantize` codebook `half_floats: true` does
after tuning) and save it again, to see what the 2-byte floats save on an existing artifact (#9).

    .venv/bin/python benchmarks/round_to_half.py SRC_ARTIFACT OUT_DIR
    .venv/bin/frugal measure OUT_DIR --data fashion-mnist --out OUT.json
"""

import json
import sys
from pathlib import Path

import torch

import frugalml
from frugalml.compress.quantize import save_quantized
from frugalml.compress.quantize.codebook import round_to_half


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    q = frugalml.load(src)
    info = json.loads((src / "model.json").read_text())
    with torch.no_grad():
        kept = round_to_half(q.module)
        for p in q.module.parameters():
            p.add_(0.0)
    q.frugal_settings = {**q.frugal_settings, "half_floats": True}
    save_quantized(q, out, info["spec"])
    for f in sorted(out.iterdir()):
        print(f.name, f.stat().st_size)
    print("total", sum(f.stat().st_size for f in out.iterdir()), "B; left float32:", kept or "none")


if __name__ == "__main__":
    main()
