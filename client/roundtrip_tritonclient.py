#!/usr/bin/env python3
"""Round-trip a photo through a running HyperThumbnail Triton server using only `tritonclient`.

This is what any program in any language does (the tensors and model names are the interface):

    hyperthumbnail serve &                       # or the NGC container, see docs/serving.md
    python client/roundtrip_tritonclient.py photo.png --url 127.0.0.1:8000
"""
from __future__ import annotations

import argparse

import numpy as np
import tritonclient.http as httpclient
from PIL import Image


def encode(client: httpclient.InferenceServerClient, image: np.ndarray) -> bytes:
    batch = image[None]  # the ensembles have max_batch_size > 0: requests carry a batch dimension
    inp = httpclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    return client.infer("hyperthumbnail_encode", [inp]).as_numpy("THUMBNAIL")[0, 0]


def decode(client: httpclient.InferenceServerClient, thumbnail: bytes) -> np.ndarray:
    data = np.array([[thumbnail]], dtype=np.object_)
    inp = httpclient.InferInput("THUMBNAIL", [1, 1], "BYTES")
    inp.set_data_from_numpy(data)
    return client.infer("hyperthumbnail_decode", [inp]).as_numpy("IMAGE")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--url", default="127.0.0.1:8000")
    parser.add_argument("--thumbnail", default="thumbnail.jpg")
    parser.add_argument("--output", default="roundtrip.png")
    args = parser.parse_args()

    image = np.asarray(Image.open(args.image).convert("RGB"))
    client = httpclient.InferenceServerClient(args.url)
    thumbnail = encode(client, image)
    with open(args.thumbnail, "wb") as f:
        f.write(thumbnail)
    restored = decode(client, thumbnail)
    Image.fromarray(restored).save(args.output)
    mse = np.mean((restored.astype(np.float64) - image) ** 2)
    print(f"{args.thumbnail}: {len(thumbnail)} bytes = {8 * len(thumbnail) / (image.shape[0] * image.shape[1]):.4f} bpp; "
          f"{args.output}: {restored.shape[1]}x{restored.shape[0]}, PSNR {10 * np.log10(255 ** 2 / mse):.2f} dB")


if __name__ == "__main__":
    main()
