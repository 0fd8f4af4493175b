"""Miniature data sets in the real layouts (CUB birds, Oxford flowers, MS-COCO, folders), written by tests.

A few small images per class with the real file-name patterns, caption files of ten lines, and the split
pickles as Python 2 wrote them (protocol 2, byte strings as ``SHORT_BINSTRING``, numpy arrays through
``numpy.core.multiarray._reconstruct``), so the readers meet exactly what a download contains.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from t2i.config import merge, resolve
from t2i_test_helpers import TINY

BIRD_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani")
COLOURS = ("red", "blue", "yellow", "green", "white", "black", "brown", "grey")


def picture(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    """A smooth random RGB picture (JPEG-friendly), ``uint8 (height, width, 3)``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-2, 2, (2, 3))
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def save_picture(path: Path, seed: int, width: int = 48, height: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(seed, width, height)).save(path)
    return path


def captions_for(seed: int, n: int = 10) -> list[str]:
    colour = COLOURS[seed % len(COLOURS)]
    return [f"a {colour} bird number {seed} with caption {j}" for j in range(n)]


# -- Python 2 pickles ---------------------------------------------------------------------------------------
def py2_pickle(obj: Any) -> bytes:
    """``obj`` pickled as Python 2's cPickle.dump(obj, f, 2) writes it: ``str`` as 8-bit byte strings."""
    out = bytearray(b"\x80\x02")

    def put(o: Any) -> None:
        if o is None:
            out.extend(b"N")
        elif o is True or o is False:
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, (str, bytes)):
            data = o.encode("latin1") if isinstance(o, str) else o
            out.extend((b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data)
        elif isinstance(o, list):
            out.extend(b"](")
            for x in o:
                put(x)
            out.extend(b"e")
        elif isinstance(o, tuple):
            out.extend(b"(")
            for x in o:
                put(x)
            out.extend(b"t")
        elif isinstance(o, np.ndarray):  # numpy 1.x under Python 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n")
            put((0,))
            put("b")
            out.extend(b"tR(")
            put(1)
            put(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n(")
            put(o.dtype.str[1:])
            put(0)
            put(1)
            out.extend(b"tR")
            put((3, "<", None, None, None, -1, -1, 0))
            out.extend(b"b")
            put(False)
            put(np.ascontiguousarray(o).astype(o.dtype.newbyteorder("<")).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    put(obj)
    out.extend(b".")
    return bytes(out)


# -- layouts -----------------------------------------------------------------------------------------------
def make_cub(root: Path, per_class: int = 3, embeddings: bool = True) -> Path:
    """``root/birds``: 4 classes (3 train, 1 test, class-disjoint) of ``per_class`` birds each."""
    birds = root / "birds"
    cub = birds / "CUB_200_2011"
    names: dict[str, list[str]] = {"train": [], "test": []}
    images_txt, boxes_txt = [], []
    image_id = 0
    for c, cls in enumerate(BIRD_CLASSES):
        species = cls.split(".", 1)[1].replace("footed", "Footed")
        for k in range(per_class):
            image_id += 1
            key = f"{cls}/{species}_{k + 1:04d}_{796100 + image_id}"
            save_picture(cub / "images" / f"{key}.jpg", image_id, 64, 48)
            images_txt.append(f"{image_id} {key}.jpg")
            boxes_txt.append(f"{image_id} {10.0 + k} {8.0} {30.0} {24.0}")
            text = birds / "text" / f"{key}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(captions_for(image_id)) + "\n")
            names["test" if c == len(BIRD_CLASSES) - 1 else "train"].append(key)
    (cub / "images.txt").write_text("\n".join(images_txt) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes_txt) + "\n")
    for split, keys in names.items():
        (birds / split).mkdir(parents=True, exist_ok=True)
        (birds / split / "filenames.pickle").write_bytes(py2_pickle(keys))
        if embeddings:
            table = [np.random.default_rng(i).standard_normal((10, 1024)).astype(np.float32) for i in range(len(keys))]
            (birds / split / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_pickle(table))
    return birds


def make_oxford(root: Path, per_class: int = 3) -> Path:
    """``root/flowers``: 4 classes (3 train, 1 test) in the StackGAN flowers layout (text_c10, jpg/)."""
    flowers = root / "flowers"
    names: dict[str, list[str]] = {"train": [], "test": []}
    n = 0
    for c in range(4):
        for _ in range(per_class):
            n += 1
            save_picture(flowers / "jpg" / f"image_{n:05d}.jpg", 100 + n, 50, 60)
            text = flowers / "text_c10" / f"class_{c + 1:05d}" / f"image_{n:05d}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(f"this flower {n} has petals, caption {j}" for j in range(10)) + "\n")
            names["test" if c == 3 else "train"].append(f"jpg/image_{n:05d}")
    for split, keys in names.items():
        (flowers / split).mkdir(parents=True, exist_ok=True)
        (flowers / split / "filenames.pickle").write_bytes(py2_pickle(keys))
    return flowers


def make_coco(root: Path, year: str = "2014", n_train: int = 10, n_test: int = 4) -> Path:
    """``root/coco``: annotations/captions_{train,val}YEAR.json and the two image folders."""
    coco = root / "coco"
    next_id = 0
    for split, n in (("train", n_train), ("val", n_test)):
        images, annotations = [], []
        for i in range(n):
            image_id = 9 + 7 * i + (1000 if split == "val" else 0)
            name = f"COCO_{split}{year}_{image_id:012d}.jpg" if year == "2014" else f"{image_id:012d}.jpg"
            save_picture(coco / f"{split}{year}" / name, image_id, 64, 48)
            images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
            for j in range(5):
                next_id += 1
                annotations.append({"id": next_id, "image_id": image_id, "caption": f"A photo {image_id} of a kitchen, view {j}."})
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        (coco / "annotations" / f"captions_{split}{year}.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return coco


def make_folder(root: Path, n: int = 10, mode: str = "sidecar") -> Path:
    """``root/mine`` with ``n`` images; captions as sidecar .txt, captions.jsonl or captions.csv."""
    folder = root / "mine"
    rows = []
    for i in range(n):
        rel = f"{'cats' if i % 2 else 'dogs'}/img_{i:03d}.{'png' if i % 3 == 0 else 'jpg'}"
        save_picture(folder / rel, 200 + i, 40 + i, 36 + i)
        captions = [f"a picture of animal {i}", f"animal {i} again"]
        if mode == "sidecar":
            (folder / rel).with_suffix(".txt").write_text("\n".join(captions) + "\n")
        rows.append((rel, captions, "test" if i < 3 else "train"))
    if mode == "jsonl":
        lines = [json.dumps({"image": rel, "caption": caps, "split": split}) for rel, caps, split in rows]
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    elif mode == "csv":
        lines = ["image,caption,split"] + [f'{rel},"{c}",{split}' for rel, caps, split in rows for c in caps]
        (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


def data_config(name: str, root: Path, resolution: int = 32, batch_size: int = 4, steps: int = 3, **data: Any):
    """The tiny test recipe on data set ``name`` at ``root`` (no Shapes options, no metrics)."""
    base = {k: v for k, v in TINY.items() if k != "data"}
    options = {"root": str(root), "quiet": True, **data.pop("options", {})}
    tree = {"data": {"name": name, "resolution": resolution, "options": options, **data},
            "train": {"batch_size": batch_size, "steps": steps, "checkpoint_every": 0}}
    return resolve(merge(base, tree))


def build_twice_at_once(build: Callable[[], Any], owner: Any, name: str) -> tuple[list[Any], int]:
    """Call ``build`` in two threads started together; return both results and how many times
    ``owner.name`` (the function that does the expensive build, slowed so that the threads overlap) ran."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(0.3)
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def worker(i: int) -> None:
        start.wait()
        results[i] = build()

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        setattr(owner, name, original)
    return results, len(calls)
