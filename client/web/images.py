"""Face crops and heatmap overlays of an ``explain_<N>`` answer as PNG bytes (pillow, in memory)."""

from __future__ import annotations

import base64
import io

from ..explain import HEATMAP_ALPHA, blend_heatmap, require_pillow, unnormalise_faces
from ..results import ExplainResult

# Small PNGs of 112 x 112: fast compression is enough.
PNG_COMPRESS_LEVEL = 1


def _png(image_module, rgb) -> bytes:
    buffer = io.BytesIO()
    image_module.fromarray(rgb).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def explanation_pngs(result: ExplainResult, alpha: float = HEATMAP_ALPHA) -> tuple[list[bytes], list[bytes]]:
    """``(face PNGs, heatmap overlay PNGs)``, one of each per frame, as ``client explain`` draws them."""
    image_module = require_pillow()
    faces = unnormalise_faces(result.faces)
    crops = [_png(image_module, face) for face in faces]
    overlays = [_png(image_module, blend_heatmap(face, heatmap, alpha)) for face, heatmap in zip(faces, result.heatmap)]
    return crops, overlays


def as_base64(pngs: list[bytes]) -> list[str]:
    return [base64.b64encode(png).decode("ascii") for png in pngs]
