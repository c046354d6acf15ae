#!/usr/bin/env python3
"""Generates the TensorBoard fixtures read by Tests/RLAlgorithmsTests/LoggingTests.swift, and checks
event files written by the Swift code with TensorBoard's own reader.

Usage (from the repository root):
    pip install -r Tests/RLAlgorithmsTests/Fixtures/requirements.txt    # tensorboard, pillow
    python Tests/RLAlgorithmsTests/Fixtures/make_tensorboard_fixtures.py
    python Tests/RLAlgorithmsTests/Fixtures/make_tensorboard_fixtures.py --verify EVENTFILE...

tensorboard's `EventFileWriter` needs absl-py at import time (it is a dependency of the tensorboard
wheel); with only `pip install --no-deps tensorboard`, add `absl-py` too.

The reference writer is tensorboard's `tensorboard.summary.writer.event_file_writer.EventFileWriter`
(the writer torch.utils.tensorboard's SummaryWriter uses) fed `tensorboard.compat.proto` Events with
fixed wall times, steps, tags and values; its clock and hostname are pinned so the file is
reproducible. Everything here is deterministic: rerunning rewrites identical files.

Fixtures/tensorboard/
  events.out.tfevents.1700000000.fixturehost
                  the reference event file (renamed: EventFileWriter adds the pid and a counter)
  inputs.json     what was written: the header's wall time, then one entry per Event:
                  {"kind": "scalars", "wall_time": <double bits, hex>, "step": n,
                   "values": [[tag, <double bits, hex>], ...]}  (already sorted by tag) or
                  {"kind": "images", "wall_time": ..., "step": n,
                   "images": [{"tag", "height", "width", "png": file name}]}
  image0.png, image1.png
                  the PNG bytes of the image values (Pillow), stored so the Swift test can write
                  the very same bytes
  images.json     those images' RGB pixels (row-major, interleaved) and sizes
  decoded.json    the reference file read back with tensorboard's LegacyEventFileLoader (which
                  checks both CRCs of every record): one object per Event with wall_time
                  (double bits, hex), step, file_version, source_writer, and summary values
                  {tag, simple_value (float32 bits, hex)} or {tag, image: {height, width,
                  colorspace, png (hex)}}; plus "event_file_loader_count", the number of events
                  TensorBoard's own EventFileLoader (the one its UI uses) yields

--verify reads each file with LegacyEventFileLoader and EventFileLoader, prints the decoded events
as JSON lines and exits non-zero if the reader fails (a CRC error, a truncated record).
"""

import io
import json
import math
import os
import socket
import struct
import sys

from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import (
    EventFileLoader,
    LegacyEventFileLoader,
)
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import event_file_writer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tensorboard")
HEADER_TIME = 1700000000.5
FILE_NAME = "events.out.tfevents.1700000000.fixturehost"


def dbits(x):
    return "%016x" % struct.unpack("<Q", struct.pack("<d", x))[0]


def fbits(x):
    return "%08x" % struct.unpack("<I", struct.pack("<f", x))[0]


def make_images():
    """Two small RGB images with hand-chosen pixels."""
    a = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 100, 50), (255, 255, 255)]  # 3x2
    b = [(0, 0, 0), (128, 128, 128), (1, 2, 3), (250, 251, 252)]  # 2x2
    out = []
    for name, (w, h), px in [("image0.png", (3, 2), a), ("image1.png", (2, 2), b)]:
        img = Image.new("RGB", (w, h))
        img.putdata(px)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append({"png": name, "width": w, "height": h,
                    "pixels": [c for p in px for c in p], "bytes": buf.getvalue()})
    return out


def calls(images):
    """The Events after the header: scalars sorted by tag (as the Swift logger sorts them)."""
    inf, nan = float("inf"), float("nan")
    scalar_sets = [
        (1700000001.25, 0, {"loss": -0.5, "approx_kl": 0.0123, "clipfrac": 0.25}),
        (1700000002.0, 1, {"reward_mean": 3.14159, "reward_std": 1e-40, "epoch": 0.0}),
        (1700000003.75, 7, {"nan": nan, "pos_inf": inf, "neg_inf": -inf, "neg_zero": -0.0,
                            "overflow": 1e39, "ünïcode/ταγ": 2.5, 'tag with "quotes"': 1.0}),
        (0.0, 0, {"zero_time_and_step": 1.0}),
        (1700000005.0, 2 ** 40, {"x": 123456.789}),
        (1700000005.5, -1, {"negative_step": 1.0}),
    ]
    result = []
    for wall, step, values in scalar_sets:
        ordered = sorted(values.items(), key=lambda kv: kv[0].encode("utf-8"))
        result.append({"kind": "scalars", "wall_time": wall, "step": step, "values": ordered})
    result.append({"kind": "images", "wall_time": 1700000006.5, "step": 3,
                   "images": [dict(tag="a red circle | 0.500", **images[0]),
                              dict(tag="second image | -1.250", **images[1])]})
    return result


def to_event(call):
    if call["kind"] == "scalars":
        values = [summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in call["values"]]
    else:
        values = [summary_pb2.Summary.Value(
            tag=im["tag"],
            image=summary_pb2.Summary.Image(height=im["height"], width=im["width"], colorspace=3,
                                            encoded_image_string=im["bytes"]))
            for im in call["images"]]
    return event_pb2.Event(wall_time=call["wall_time"], step=call["step"],
                           summary=summary_pb2.Summary(value=values))


def decode(event):
    out = {"wall_time": dbits(event.wall_time), "step": event.step}
    what = event.WhichOneof("what")
    if what == "file_version":
        out["file_version"] = event.file_version
    if event.HasField("source_metadata"):
        out["source_writer"] = event.source_metadata.writer
    if what == "summary":
        values = []
        for v in event.summary.value:
            kind = v.WhichOneof("value")
            if kind == "simple_value":
                values.append({"tag": v.tag, "simple_value": fbits(v.simple_value)})
            elif kind == "image":
                values.append({"tag": v.tag, "image": {
                    "height": v.image.height, "width": v.image.width,
                    "colorspace": v.image.colorspace, "png": v.image.encoded_image_string.hex()}})
            else:
                raise SystemExit("unexpected summary value kind %r" % kind)
        out["summary"] = values
    return out


def read_back(path):
    events = [decode(e) for e in LegacyEventFileLoader(path).Load()]
    count = sum(1 for _ in EventFileLoader(path).Load())
    return events, count


def generate():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.startswith("events.out.tfevents."):
            os.remove(os.path.join(OUT, name))
    images = make_images()
    for im in images:
        with open(os.path.join(OUT, im["png"]), "wb") as f:
            f.write(im["bytes"])
    with open(os.path.join(OUT, "images.json"), "w") as f:
        json.dump([{k: im[k] for k in ("png", "width", "height", "pixels")} for im in images], f, indent=1)

    # Pin the writer's clock (file name + header wall time) and host name.
    class Clock:
        @staticmethod
        def time():
            return HEADER_TIME
    event_file_writer.time = Clock
    socket.gethostname = lambda: "fixturehost"
    writer = event_file_writer.EventFileWriter(OUT)
    all_calls = calls(images)
    for call in all_calls:
        writer.add_event(to_event(call))
    writer.close()
    written = [n for n in os.listdir(OUT) if n.startswith("events.out.tfevents.")]
    assert len(written) == 1, written
    path = os.path.join(OUT, FILE_NAME)
    os.rename(os.path.join(OUT, written[0]), path)

    inputs = {"header_wall_time": dbits(HEADER_TIME), "file_name": FILE_NAME, "events": []}
    for call in all_calls:
        entry = {"kind": call["kind"], "wall_time": dbits(call["wall_time"]), "step": call["step"]}
        if call["kind"] == "scalars":
            entry["values"] = [[t, dbits(v)] for t, v in call["values"]]
        else:
            entry["images"] = [{k: im[k] for k in ("tag", "height", "width", "png")} for im in call["images"]]
        inputs["events"].append(entry)
    with open(os.path.join(OUT, "inputs.json"), "w") as f:
        json.dump(inputs, f, indent=1, ensure_ascii=False)

    events, count = read_back(path)
    assert len(events) == 1 + len(all_calls) and count == len(events), (len(events), count)
    with open(os.path.join(OUT, "decoded.json"), "w") as f:
        json.dump({"events": events, "event_file_loader_count": count}, f, indent=1, ensure_ascii=False)
    print("wrote", OUT, "(%d events)" % len(events))


def verify(paths):
    for path in paths:
        events, count = read_back(path)
        for e in events:
            print(json.dumps(e, ensure_ascii=False))
        if count != len(events):
            raise SystemExit("%s: EventFileLoader gave %d events, LegacyEventFileLoader %d" % (path, count, len(events)))
        print("%s: %d events read by LegacyEventFileLoader and EventFileLoader" % (path, len(events)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--verify":
        verify(sys.argv[2:])
    else:
        generate()
