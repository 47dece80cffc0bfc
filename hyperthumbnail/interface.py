"""The served interface in one place: model and tensor names, max batch, limits.

The model repository templates (`model_repository/*/config.pbtxt`), the repository builder, the
client SDK, the perf tool and the codec all take their names and limits from here; a test parses
every config.pbtxt and checks it says the same. Plain Python: importable without torch (the GPU
container runs the serving code with no torch installed).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADMIN_HEADER", "ADMIN_KEY_ENV", "COEF_LIMIT", "DECODE_MODEL", "DEFAULT_MAX_PIXELS", "ENCODE_AT_BPP_MODEL",
    "ENCODE_MODEL", "ENSEMBLES", "GRPC_ADMIN_HEADER", "MAX_BATCH", "MODELS", "NATIVE_ONLY_MODELS", "NEURAL_MODELS",
    "SERVED_GRAPHS", "ModelSpec", "TensorSpec",
]

# ---------------------------------------------------------------------------- limits
MAX_BATCH = 8                    # max_batch_size of every model in the CPU repository
COEF_LIMIT = 1023                # |quantized AC coefficient| of baseline 8-bit JPEG (Huffman size category 10)
# Largest photo accepted by default: 8192x6144 (50.3 MP), so today's 48-50 MP phone photos
# (8064x6048, 8160x6120, 8192x6144) fit; at that size the CLI and the server stay within 3 GiB to
# encode and 2 GiB to decode (tiled graphs, runtime.tiling; benchmarks/results/bigphoto.json).
DEFAULT_MAX_PIXELS = 8192 * 6144

# ---------------------------------------------------------------------------- models
ENCODE_MODEL = "hyperthumbnail_encode"  # ensemble: photo -> .jpg bytes
DECODE_MODEL = "hyperthumbnail_decode"  # ensemble: .jpg bytes -> photo
ENSEMBLES = (ENCODE_MODEL, DECODE_MODEL)  # what a client waits for
ENCODE_AT_BPP_MODEL = "hyperthumbnail_encode_at_bpp"  # server-side rate control (Python/BLS)
NEURAL_MODELS = ("encoder", "qpm", "decoder")  # exported graphs (ONNX / TensorRT)
NATIVE_ONLY_MODELS = ("preprocess", "postprocess")  # pixel steps the NGC targets' graphs need
# The graphs the NGC targets' native backends serve as encoder and decoder: uint8 HWC in and out,
# so no float HR image travels between ensemble steps (TensorRT plans are built from them too).
SERVED_GRAPHS = {"encoder": "encoder_u8", "decoder": "decoder_u8"}

# ---------------------------------------------------------------------------- the admin key
# Restricted admin APIs (serving/server_flags.py) want the operator's key in a request header;
# over gRPC, Triton expects restricted headers under its own prefix.
ADMIN_HEADER = "admin-key"
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER
ADMIN_KEY_ENV = "HYPERTHUMBNAIL_ADMIN_KEY"  # where `serve`, the SDK and `perf` look for the key


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's config name, e.g. "TYPE_UINT8"
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = MAX_BATCH


def _t(name: str, data_type: str, *dims: int, optional: bool = False) -> TensorSpec:
    return TensorSpec(name, f"TYPE_{data_type}", dims, optional)


_IMAGE = _t("IMAGE", "UINT8", -1, -1, 3)  # RGB, HWC
_THUMBNAIL = _t("THUMBNAIL", "STRING", 1)  # the .jpg bytes
_HR_SIZE = _t("HR_SIZE", "INT32", 2)  # (width, height) of the photo
_QUANTIZED = _t("QUANTIZED", "INT32", 3, 64, -1, -1)  # Y, Cb, Cr x 64 natural-order DCT entries x blocks
_TABLES = _t("TABLES", "INT32", 2, 64)  # luma, chroma quantization tables
_IMAGE_PADDED = _t("IMAGE_PADDED", "UINT8", -1, -1, 3)  # edge-padded to whole 8x8 thumbnail blocks
_TABLE_SCALE_IN, _TABLE_SCALE = _t("TABLE_SCALE", "FP32", 1, optional=True), _t("TABLE_SCALE", "FP32", 1)
# The photo's metadata: an RGB ICC profile and an EXIF block ("Exif\0\0" + TIFF); optional on
# encode (carried into the thumbnail), b"" on decode where the thumbnail has none.
_ICC_IN, _EXIF_IN = _t("ICC_PROFILE", "STRING", 1, optional=True), _t("EXIF", "STRING", 1, optional=True)
_ICC_OUT, _EXIF_OUT = _t("ICC_PROFILE", "STRING", 1), _t("EXIF", "STRING", 1)

MODELS: dict[str, ModelSpec] = {
    ENCODE_MODEL: ModelSpec((_IMAGE, _TABLE_SCALE_IN, _ICC_IN, _EXIF_IN), (_THUMBNAIL,)),
    DECODE_MODEL: ModelSpec((_THUMBNAIL,), (_IMAGE, _ICC_OUT, _EXIF_OUT)),
    ENCODE_AT_BPP_MODEL: ModelSpec(
        (_IMAGE, _t("TARGET_BPP", "FP32", 1), _t("TOLERANCE", "FP32", 1, optional=True)),
        (_THUMBNAIL, _t("TABLE_SCALE", "FP32", 1), _t("BPP", "FP32", 1))),
    # The CPU repository's encoder (Python backend) pads the photo itself and passes the table
    # scale on: the uint8 photo is the only HR tensor of the encode ensemble (no float copy, no
    # padded copy between steps). The NGC targets' encoder is the `encoder_u8` graph after
    # `preprocess` (configs/{gpu,openvino}.pbtxt).
    "encoder": ModelSpec((_t("image", "UINT8", -1, -1, 3), _TABLE_SCALE_IN),
                         (_t("coefficients", "FP32", 3, 64, -1, -1), _HR_SIZE, _TABLE_SCALE)),
    "qpm": ModelSpec((_t("coefficients", "FP32", 3, 64, -1, -1), _t("table_scale", "FP32", 1)),
                     (_t("quantized", "INT32", 3, 64, -1, -1), _t("tables", "INT32", 2, 64))),
    "jpeg_encode": ModelSpec((_QUANTIZED, _TABLES, _HR_SIZE, _ICC_IN, _EXIF_IN), (_THUMBNAIL,)),
    "jpeg_decode": ModelSpec((_THUMBNAIL,), (_QUANTIZED, _TABLES, _HR_SIZE, _ICC_OUT, _EXIF_OUT)),
    # The CPU repository's decoder crops to HR_SIZE itself (the image leaves it once, at its size).
    "decoder": ModelSpec((_t("quantized", "INT32", 3, 64, -1, -1), _t("tables", "INT32", 2, 64), _HR_SIZE),
                         (_IMAGE,)),
    # Only in the NGC targets, around their native-backend encoder and decoder graphs.
    "preprocess": ModelSpec((_IMAGE, _TABLE_SCALE_IN), (_IMAGE_PADDED, _HR_SIZE, _TABLE_SCALE)),
    "postprocess": ModelSpec((_IMAGE_PADDED, _HR_SIZE), (_IMAGE,)),
}
