"""The output folder of `embed`, written chunk by chunk so an interrupted run resumes exactly.

While it runs, `OUT/.embed-partial/` holds `settings.json` (the start, the inputs and the batching:
what must match for a resume) and one pair per finished chunk: `chunk-NNNNNN.npy` (float32
features) and `chunk-NNNNNN.json` (its index rows and skipped views), the JSON written last, each
file by an atomic rename. A rerun with the same settings carries on after the last finished chunk;
the final assembly writes `features.npy`, `index.csv` and `embed.json` from the chunks alone, so
an interrupted run and an uninterrupted one give the same bytes. Nothing already in OUT is
replaced without `overwrite`, and then only those files (and `knn.json`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ssl_benthic.core.errors import UserError
from ssl_benthic.core.files import write_atomic
from ssl_benthic.core.paths import sha256_file

__all__ = ["PARTIAL", "OUTPUTS", "ChunkStore", "index_csv"]

PARTIAL = ".embed-partial"
OUTPUTS = ("features.npy", "index.csv", "embed.json", "knn.json")
DTYPES = ("float16", "float32")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def index_csv(rows: list[dict[str, Any]]) -> bytes:
    """index.csv: key, image, row, column, then `labels.<head>` per head seen (sorted), several
    paths of one head joined by `|`; empty cells for what a row does not have."""
    heads = sorted({h for r in rows for h in r["labels"]})
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "image", "row", "column", *(f"labels.{h}" for h in heads)])
    for r in rows:
        cells = ["" if r[c] is None else r[c] for c in ("key", "image", "row", "column")]
        writer.writerow([*cells, *("|".join(r["labels"].get(h, [])) for h in heads)])
    return buf.getvalue().encode()


class ChunkStore:
    """Chunks of one run in OUT/.embed-partial and their assembly into OUT."""

    def __init__(self, out: str | Path, settings: dict[str, Any], overwrite: bool = False) -> None:
        self.out, self.settings = Path(out), settings
        self.partial = self.out / PARTIAL
        self.done = self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> int:
        """Chunks already finished (0 for a fresh run); refuses an OUT it may not write into."""
        saved = self.partial / "settings.json"
        if saved.is_file() and json.loads(saved.read_text()) == _plain(self.settings):
            return self._finished()
        theirs = [p.name for p in sorted(self.out.iterdir())] if self.out.is_dir() else []
        if theirs and not overwrite:
            what = "an unfinished embedding of other settings" if theirs == [PARTIAL] else "files"
            listed = ", ".join(theirs[:5]) + (" ..." if len(theirs) > 5 else "")
            raise UserError(
                f"--out {self.out} already holds {what} ({listed}); pass --overwrite to write "
                f"this embedding there (it replaces only {', '.join(OUTPUTS)}), or choose "
                "another --out"
            )
        shutil.rmtree(self.partial, ignore_errors=True)  # ours: made by an earlier embed
        self.partial.mkdir(parents=True)
        write_atomic(saved, _json_bytes(self.settings))
        return 0

    def _finished(self) -> int:
        n = 0
        while (self.partial / f"chunk-{n:06d}.json").is_file():
            n += 1
        return n

    def write(self, n: int, features: np.ndarray, rows: list[dict], skipped: list[dict]) -> None:
        """Chunk `n`: its float32 features (one row per index row) and its rows and skips."""
        assert features.shape[0] == len(rows)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, dtype=np.float32))
        write_atomic(self.partial / f"chunk-{n:06d}.npy", buf.getvalue())
        write_atomic(
            self.partial / f"chunk-{n:06d}.json", _json_bytes({"rows": rows, "skipped": skipped})
        )

    def _chunks(self) -> list[tuple[Path, dict]]:
        return [
            (self.partial / f"chunk-{n:06d}.npy", json.loads(path.read_text()))
            for n in range(self._finished())
            for path in [self.partial / f"chunk-{n:06d}.json"]
        ]

    def assemble(self, dtype: str, record: dict[str, Any]) -> dict[str, Any]:
        """Write features.npy (in `dtype`), index.csv and embed.json (`record` + counts, skipped
        views and the two files' sha256) from the chunks; remove the partial folder; return it."""
        chunks = self._chunks()
        width = int(record["start"]["num_features"])
        rows = [r for _, c in chunks for r in c["rows"]]
        skipped = [s for _, c in chunks for s in c["skipped"]]
        features = self.out / "features.npy"
        tmp = features.with_name("features.npy.tmp")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(rows), width))
        at = 0
        for npy, _ in chunks:
            part = np.load(npy)
            array[at : at + len(part)] = part.astype(dtype)
            at += len(part)
        array.flush()
        del array
        os.replace(tmp, features)
        write_atomic(self.out / "index.csv", index_csv(rows))
        (self.out / "knn.json").unlink(missing_ok=True)  # it belonged to the replaced embedding
        final = {
            **record,
            "dtype": dtype,
            "count": len(rows),
            "skipped": skipped,
            "features_sha256": sha256_file(features),
            "index_sha256": sha256_file(self.out / "index.csv"),
        }
        write_atomic(self.out / "embed.json", _json_bytes(final))
        shutil.rmtree(self.partial)
        return final


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))
