"""HyperThumbnail: rate-distortion optimised image rescaling into standard JPEG thumbnails.

Layout: `model` (PyTorch networks), `codec` (thumbnail .jpg files and image I/O),
`training`, `export` (ONNX / TensorRT), `serving` (Triton), `client` (Triton client + perf),
`cli` (the `hyperthumbnail` command).
"""

__version__ = "0.1.0"
