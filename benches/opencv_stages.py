"""img2dataset's per-image work, one core: OpenCV decode (cv2.imdecode), area resize
to a 512-pixel long side, white border to a square and JPEG encode at quality 95, on
the same previews as `cargo bench -p paperclip-images --bench stages`.

    target/ingest-venv/bin/python benches/opencv_stages.py DIR [MAX_FILES]
"""
import glob
import sys
import time

import cv2
import numpy as np

cv2.setNumThreads(1)
directory = sys.argv[1]
max_files = int(sys.argv[2]) if len(sys.argv) > 2 else 60
paths = sorted(glob.glob(f"{directory}/*.jpg"))[:max_files]
blobs = [np.frombuffer(open(path, "rb").read(), np.uint8) for path in paths]


def timed(step, items):
    start = time.perf_counter()
    results = [step(item) for item in items]
    return time.perf_counter() - start, results


decode_secs, images = timed(lambda blob: cv2.imdecode(blob, cv2.IMREAD_UNCHANGED), blobs)
megapixels = sum(image.shape[0] * image.shape[1] for image in images) / 1e6


def resize(image):
    height, width = image.shape[:2]
    scale = 512 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def pad(image):
    height, width = image.shape[:2]
    top, left = (512 - height) // 2, (512 - width) // 2
    return cv2.copyMakeBorder(image, top, 512 - height - top, left, 512 - width - left,
                              cv2.BORDER_CONSTANT, value=[255, 255, 255])


resize_secs, resized = timed(resize, images)
pad_secs, squares = timed(pad, resized)
encode_secs, _ = timed(
    lambda square: cv2.imencode(".jpg", square, [cv2.IMWRITE_JPEG_QUALITY, 95]), squares)

count = len(blobs)
print(f"\n| stage, one core (OpenCV {cv2.__version__}) | ms per preview | source megapixels/s |")
print("|---|---:|---:|")
for name, secs in [("decode (cv2.imdecode)", decode_secs), ("resize (INTER_AREA)", resize_secs),
                   ("pad (copyMakeBorder)", pad_secs), ("encode 512 q95 (cv2.imencode)", encode_secs)]:
    print(f"| {name} | {secs * 1e3 / count:.2f} | {megapixels / secs:.0f} |")
