"""`--format coralnet` (for `--coralnet` input): the export written back with machine suggestions,
ready to import into CoralNet or CoralNet-Toolbox. The file format, both directions, is
`ssl_benthic.data.points.coralnet`; here the suggestions are ranked (`suggestions.rank_codes`: the
label codes of the training shards' label map by the probability of being the point's label) and
collected per point.

Before anything is written, the label map is checked against the model: a code whose path is not
in its head's scheme (a typo, another scheme; CATAMI, or a scheme file still where training read
it) is refused, all of them listed with the nearest path; a code the training never saw, or of a
head the model lacks, is warned about (it can never be suggested).
"""

from __future__ import annotations

import argparse
import difflib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hml_finetune.hml.schemes import load_scheme
from hml_finetune.predict.suggestions import rank_codes
from hml_finetune.predict.writers import WriteContext, Writer
from ssl_benthic.core.catami import catami_nodes
from ssl_benthic.core.errors import ConfigError
from ssl_benthic.core.paths import sha256_file

if TYPE_CHECKING:
    from hml_finetune.finetune.inference import Finetuned
    from hml_finetune.hml.schemes import Scheme
    from hml_finetune.predict.inputs import Item
    from hml_finetune.predict.labels import HeadPrediction

__all__ = ["WRITER", "CoralnetWriter", "check_label_map"]


def _scheme_nodes(scheme: Scheme) -> frozenset[str] | None:
    """Every node of a head's scheme, when predict can know them: CATAMI's, or a scheme file's
    still at its recorded place with its recorded sha256; None otherwise (`data`, a moved file)."""
    if scheme.name == "catami":
        return catami_nodes()
    path = Path(scheme.name)
    if scheme.name == "data" or not path.is_file() or sha256_file(path) != scheme.sha256:
        return None
    return load_scheme(scheme.head, scheme.name, scheme.sep).nodes


def _unknown(code: str, entry: dict, f: Finetuned) -> tuple[str, str] | None:
    """('refuse' | 'warn', why) for a code the model cannot suggest, None when it can: refused
    when its path is not in its head's scheme, warned about when training never saw it."""
    head, path = entry["head"], entry["path"]
    if head in f.hierarchies:
        scheme = f.schemes[head]
        node = scheme.node(path)
        if node in f.hierarchies[head].nodes:
            return None
        nodes = _scheme_nodes(scheme)
        if nodes is None or node in nodes:
            return "warn", f"{code!r} ({path!r}: not in the training data)"
        near = difflib.get_close_matches(node, sorted(nodes), n=1, cutoff=0.0)
        hint = f", nearest {scheme.label(near[0])!r}" if near else ""
        return "refuse", f"{code!r} ({path!r}{hint})"
    if head in f.model.single:
        if path in f.model.single[head]:
            return None
        return "warn", f"{code!r} ({path!r}: not a class of head {head!r})"
    return "warn", f"{code!r} (head {head!r}: not a head of the model)"


def check_label_map(f: Finetuned) -> None:
    """Refuse the label-map codes whose path is missing from its head's scheme (ConfigError
    listing them); warn about those the model can never suggest."""
    label_map = f.meta.get("label_map") or {}
    found: dict[str, list[str]] = {"refuse": [], "warn": []}
    for code, entry in sorted(label_map.items()):
        verdict = _unknown(code, entry, f)
        if verdict is not None:
            found[verdict[0]].append(verdict[1])
    if found["refuse"]:
        raise ConfigError(
            f"{len(found['refuse'])} label-map codes have a path missing from its head's scheme: "
            f"{', '.join(found['refuse'])}; fix the label map and make the shards again; "
            "nothing written"
        )
    if found["warn"]:
        warnings.warn(
            f"{len(found['warn'])} label-map codes can never be suggested: "
            + ", ".join(found["warn"]),
            stacklevel=2,
        )


class CoralnetWriter(Writer):
    """The input export, every row and column kept, with the k most probable codes of each
    row's point and the reason of each failed one; written when every point is predicted."""

    name = "coralnet"
    help = "the --coralnet export with Machine suggestion/confidence 1..k filled (CoralNet import)"

    @classmethod
    def check(cls, args: argparse.Namespace) -> None:
        if getattr(args, "coralnet", None) is None:
            raise ConfigError(
                "--format coralnet writes a CoralNet export back: it needs --coralnet"
            )

    def __init__(self, ctx: WriteContext) -> None:
        if ctx.export is None or ctx.export.format.write_back is None or ctx.model is None:
            raise ConfigError("--format coralnet needs a --coralnet export and a model")
        check_label_map(ctx.model)
        super().__init__(ctx)
        self.suggestions: dict[tuple, list[tuple[str, float]]] = {}
        self.failures: dict[tuple, str] = {}

    def _codes(self, heads: dict[str, HeadPrediction]) -> list[tuple[str, Any]]:
        f = self.ctx.model
        return rank_codes(heads, f.meta.get("label_map"), f.hierarchies, f.schemes)[
            : self.ctx.top_k
        ]

    def write(self, item: Item, heads: dict[str, HeadPrediction], top: dict[str, str]) -> None:
        if item.row is None:
            return
        at = (item.image, item.row, item.column)
        if item.error is not None:
            self.failures[at] = item.error
        else:
            self.suggestions[at] = self._codes(heads)

    def close(self) -> None:
        export = self.ctx.export
        export.format.write_back(
            export.path,
            self.fh,
            self.suggestions,
            self.failures,
            export.options,
            k=self.ctx.top_k,
            rule=self.ctx.rule,
        )
        super().close()


WRITER = CoralnetWriter
