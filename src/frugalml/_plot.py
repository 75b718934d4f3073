"""The one way a matplotlib figure becomes PNG bytes (laid out, rendered, closed)."""

from __future__ import annotations

import io
from typing import Any


def png_bytes(fig: Any, dpi: int | None = None) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi is not None else {}))
    plt.close(fig)
    return buf.getvalue()
