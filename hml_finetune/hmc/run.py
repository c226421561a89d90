"""The HMC benchmark protocol (C-HMCNN): a 3-layer MLP per dataset, MCLoss variants, seeds, scores.

Protocol (docs/design.md, "Published numbers to match"): ReLU MLP with two hidden layers of the dataset's
size, dropout 0.7, Adam (lr 1e-4 on FUN, 1e-5 on the others), weight decay 1e-5, batch size 4, a
fixed epoch count; mean-impute and standard-scale fitted on train+valid. With a fixed threshold
the model trains on train+valid merged (as published); with a tuned threshold it trains on train
only and tunes on valid (datasets without a valid file hold out 20% of train, seeded). `refit`
then trains again on train+valid with the same seed and applies the tuned thresholds to that
model: the published protocol's model (and AU(PRC)) with tuned thresholds, for twice the training.

The loop is plain PyTorch: hundreds of small runs at batch size 4 are dominated by per-step
overhead, which a Trainer would add to.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hml_finetune.hmc.arff import ArffData, fit_preprocess, read_arff
from hml_finetune.hml.heads import EnsembleHeads
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.losses import MCLoss, NodeWeighting
from hml_finetune.hml.metrics import eval_columns, evaluate
from hml_finetune.hml.thresholds import tune_rule
from ssl_benthic.core.devices import pick_device
from ssl_benthic.core.errors import ConfigError, DataError

# dataset -> (hidden size, epochs, learning rate), from the published C-HMCNN hyper-parameters
PROTOCOL: dict[str, tuple[int, int, float]] = {
    "cellcycle_FUN": (500, 106, 1e-4),
    "derisi_FUN": (500, 67, 1e-4),
    "eisen_FUN": (500, 110, 1e-4),
    "gasch1_FUN": (1000, 42, 1e-4),
    "gasch2_FUN": (500, 123, 1e-4),
    "seq_FUN": (2000, 13, 1e-4),
    "spo_FUN": (250, 115, 1e-4),
    "Diatoms": (2000, 474, 1e-5),
    "Enron": (1000, 133, 1e-5),
    "ImCLEF07A": (1000, 592, 1e-5),
    "ImCLEF07D": (1000, 588, 1e-5),
}
# published C-HMCNN AU(PRC), mean of 10 seeds
PUBLISHED_AUPRC = {
    "cellcycle_FUN": 0.255,
    "derisi_FUN": 0.195,
    "eisen_FUN": 0.306,
    "gasch1_FUN": 0.286,
    "gasch2_FUN": 0.258,
    "seq_FUN": 0.292,
    "spo_FUN": 0.215,
    "Diatoms": 0.758,
    "Enron": 0.756,
    "ImCLEF07A": 0.956,
    "ImCLEF07D": 0.927,
}
FUN_DATASETS = [name for name in PROTOCOL if name.endswith("_FUN")]
# GO namespace nodes under 'root' are not evaluated (C-HMCNN's `to_skip`)
GO_NAMESPACES = ("GO0003674", "GO0005575", "GO0008150")
# file names of the datasets without the `NAME.{train,valid,test}.arff` layout
OTHER_FILES = {
    "Diatoms": ("Diatoms_train.arff", None, "Diatoms_test.arff"),
    "Enron": ("Enron_corr_trainvalid.arff", None, "Enron_corr_test.arff"),
    "ImCLEF07A": ("ImCLEF07A_Train.arff", None, "ImCLEF07A_Test.arff"),
    "ImCLEF07D": ("ImCLEF07D_Train.arff", None, "ImCLEF07D_Test.arff"),
}


@dataclass
class HMCSettings:
    """One benchmark configuration: the loss, its weighting and the threshold rule."""

    loss: str = "mcloss"  # mcloss | weighted | focal | weighted_focal
    measure: str = "gmu"
    heads: int = 1
    weights: str = "class-wise"
    placement: str = "reference"
    counting: str | None = None
    omega: float = 0.25
    phi: float = 0.25
    k: float = 2.0
    threshold: str = "0.5"  # a number, 'global' or 'per-node'
    epochs: int | None = None
    refit: bool = False  # tuned thresholds only: retrain on train+valid, keep the thresholds

    @property
    def tuned(self) -> bool:
        return self.threshold in ("global", "per-node")

    def validate(self) -> None:
        if self.loss not in ("mcloss", "weighted", "focal", "weighted_focal"):
            raise ConfigError(f"unknown loss {self.loss!r}")
        if not self.tuned:
            try:
                t = float(self.threshold)
            except ValueError:
                raise ConfigError(
                    f"threshold must be 'per-node', 'global' or a number in (0, 1), "
                    f"not {self.threshold!r}"
                ) from None
            if not 0.0 < t < 1.0:
                raise ConfigError(f"threshold must be in (0, 1), 'global' or 'per-node': {t}")
            if self.refit:
                raise ConfigError(
                    f"refit needs a tuned threshold ('global' or 'per-node'), not {t}: "
                    "a fixed threshold already trains on train+valid"
                )

    @property
    def protocol(self) -> str:
        """How the model is fitted and its threshold chosen, as written in result rows."""
        if not self.tuned:
            return "train+valid"
        return "train->valid tune; refit train+valid" if self.refit else "train->valid tune"


@dataclass
class HMCSplits:
    """Preprocessed features and targets: `fit` trains, `valid` tunes thresholds, `test` scores."""

    hierarchy: Hierarchy
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_valid: torch.Tensor | None
    y_valid: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    exclude: tuple[str, ...]

    def to(self, device: torch.device | str) -> HMCSplits:
        """The same splits with every tensor on `device`."""
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.__dict__.items()}
        return HMCSplits(**moved)


DATA_DIR_ENV = "HMC_DATA_DIR"


def default_data_dir() -> Path | None:
    """The folder named by the HMC_DATA_DIR environment variable (where a user unpacked the
    C-HMCNN ARFF files), if set."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def dataset_files(data_dir: str | Path, name: str) -> tuple[Path, Path | None, Path]:
    """(train, valid or None, test) ARFF paths of a dataset; a missing file is a clear error."""
    data_dir = Path(data_dir)
    if name in OTHER_FILES:
        train, valid, test = OTHER_FILES[name]
        files = (data_dir / train, None, data_dir / test)
    else:
        files = tuple(data_dir / f"{name}.{part}.arff" for part in ("train", "valid", "test"))
    for f in files:
        if f is not None and not f.is_file():
            known = ", ".join(PROTOCOL)
            raise DataError(f"{f} not found (dataset {name!r}; known datasets: {known})")
    return files  # type: ignore[return-value]


def _targets(data: ArffData, hierarchy: Hierarchy) -> torch.Tensor:
    y, _ = hierarchy.encode_many(data.labels, below_label="negative")
    return y


def _holdout(n: int, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fraction))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


def load_splits(data_dir: str | Path, name: str, merge_valid: bool, seed: int = 0) -> HMCSplits:
    """Read, preprocess (fitted on train+valid) and split a dataset for one protocol."""
    f_train, f_valid, f_test = dataset_files(data_dir, name)
    train, test = read_arff(f_train), read_arff(f_test)
    hierarchy = train.hierarchy
    x_tr, y_tr = train.X, _targets(train, hierarchy)
    if f_valid is not None:
        valid = read_arff(f_valid)
        x_va, y_va = valid.X, _targets(valid, hierarchy)
    else:  # hold out part of train to tune on; merged back when not tuning
        keep, hold = _holdout(len(x_tr), seed)
        x_tr, x_va, y_tr, y_va = x_tr[keep], x_tr[hold], y_tr[keep], y_tr[hold]
    prep = fit_preprocess(np.concatenate([x_tr, x_va]))
    x_tr, x_va, x_te = (torch.from_numpy(prep.transform(x)) for x in (x_tr, x_va, test.X))
    y_te = _targets(test, hierarchy)
    exclude = tuple(n for n in GO_NAMESPACES if n in hierarchy.index)
    if merge_valid:
        return HMCSplits(
            hierarchy,
            torch.cat([x_tr, x_va]),
            torch.cat([y_tr, y_va]),
            None,
            None,
            x_te,
            y_te,
            exclude,
        )
    return HMCSplits(hierarchy, x_tr, y_tr, x_va, y_va, x_te, y_te, exclude)


def train_mask(splits: HMCSplits, n: int) -> torch.Tensor:
    """Loss mask: every entry known except roots and excluded nodes (never evaluated, never trained)."""
    mask = torch.zeros(n, len(splits.hierarchy))
    mask[:, eval_columns(splits.hierarchy, splits.exclude)] = 1.0
    return mask


def build_loss(settings: HMCSettings, splits: HMCSplits) -> MCLoss:
    """MCLoss with node weights fitted on the training targets and/or a focal uncertainty weight."""
    pos_w = neg_w = None
    if settings.loss in ("weighted", "weighted_focal"):
        weighting = NodeWeighting(
            settings.weights, settings.placement, settings.omega, settings.counting
        )
        mask = train_mask(splits, len(splits.y_fit))
        pos_w, neg_w = weighting.fit(splits.y_fit, mask, splits.hierarchy)
    measure = settings.measure if settings.loss in ("focal", "weighted_focal") else None
    return MCLoss(splits.hierarchy, pos_w, neg_w, measure, settings.phi, settings.k)


def _fused() -> dict:
    """Fused Adam halves the optimiser's share of a batch-4 step; older torch lacks it on CPU."""
    try:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}


def train_model(
    splits: HMCSplits, settings: HMCSettings, dataset: str, seed: int, progress: bool = True
) -> EnsembleHeads:
    """Train the protocol's MLP (ensemble of `heads`) with Adam at batch size 4."""
    hidden, epochs, lr = PROTOCOL.get(dataset, (500, 100, 1e-4))
    epochs = settings.epochs or epochs
    torch.manual_seed(seed)
    model = EnsembleHeads(
        splits.x_fit.shape[1], splits.hierarchy, settings.heads, (hidden, hidden), dropout=0.7
    )
    device = splits.x_fit.device
    model.to(device)
    loss_fn = build_loss(settings, splits).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5, **_fused())
    mask_row = train_mask(splits, 1).to(device)
    gen = torch.Generator().manual_seed(seed)
    n = len(splits.x_fit)
    desc = f"{dataset} seed {seed} ({n} samples)"
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    model.train()
    for _ in bar:
        order = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, 4):
            idx = order[start : start + 4]
            y = splits.y_fit[idx]
            loss = loss_fn(model(splits.x_fit[idx]), y, mask_row.expand_as(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        bar.set_postfix(loss=f"{float(total) / n:.4f}")
    model.eval()
    return model


@torch.no_grad()
def predict(model: EnsembleHeads, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Constrained ensemble probabilities (B, K)."""
    return torch.cat([model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def choose_threshold(
    settings: HMCSettings, splits: HMCSplits, valid_probs: torch.Tensor | None
) -> float | torch.Tensor:
    """The fixed threshold, or one tuned on the validation split's predictions `valid_probs`
    (global or per node)."""
    if not settings.tuned:
        return float(settings.threshold)
    assert valid_probs is not None and splits.y_valid is not None
    probs = valid_probs
    y_valid = splits.y_valid.cpu()
    mask = train_mask(splits, len(probs))
    cols = eval_columns(splits.hierarchy, splits.exclude)
    return tune_rule(settings.threshold, probs, y_valid, mask, splits.hierarchy, columns=cols)


def run_seed(
    data_dir: str | Path,
    dataset: str,
    settings: HMCSettings,
    seed: int,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Train one seed and score it on the test split: one flat result row."""
    return run_seed_variants(data_dir, dataset, [settings], seed, progress, device)[0]


def _same_training(variants: list[HMCSettings]) -> None:
    """Variants may differ only in the threshold rule and refit; anything else needs its own run."""
    for variant in variants:
        variant.validate()
        plain = replace(variant, threshold=variants[0].threshold, refit=variants[0].refit)
        if plain != variants[0]:
            raise ValueError(
                f"variants differ in more than threshold and refit: {variants[0]} vs {variant}"
            )


def run_seed_variants(
    data_dir: str | Path,
    dataset: str,
    variants: list[HMCSettings],
    seed: int,
    progress: bool = True,
    device: str = "cpu",
) -> list[dict]:
    """Score several threshold rules of one training setup with at most two trainings per seed:
    one on train only (tuned thresholds are chosen on its valid predictions) and one on
    train+valid (fixed thresholds, and refits), each trained once. One row per variant, equal to
    what `run_seed` gives for it alone; `seconds` is the shared time for every row."""
    _same_training(variants)
    start = time.perf_counter()
    dev, base = pick_device(device), variants[0]
    tuned = valid = on_train = merged = on_merged = None
    if any(v.tuned for v in variants):
        tuned = load_splits(data_dir, dataset, merge_valid=False, seed=seed).to(dev)
        model = train_model(tuned, base, dataset, seed, progress)
        valid, on_train = predict(model, tuned.x_valid).cpu(), predict(model, tuned.x_test).cpu()
    if any(v.refit or not v.tuned for v in variants):
        merged = load_splits(data_dir, dataset, merge_valid=True, seed=seed).to(dev)
        on_merged = predict(train_model(merged, base, dataset, seed, progress), merged.x_test).cpu()
    rows = []
    for v in variants:
        splits = tuned if v.tuned else merged
        probs = on_merged if v.refit or not v.tuned else on_train
        mask = train_mask(splits, len(probs))
        rows.append(_score_row(v, splits, valid, probs, mask, dataset, seed))
    for row in rows:
        row["seconds"] = round(time.perf_counter() - start, 1)
    return rows


def _score_row(
    settings: HMCSettings,
    splits: HMCSplits,
    valid_probs: torch.Tensor | None,
    probs: torch.Tensor,
    mask: torch.Tensor,
    dataset: str,
    seed: int,
) -> dict:
    """One flat result row: test scores at the threshold this settings' rule picks."""
    threshold = choose_threshold(settings, splits, valid_probs)
    scores = evaluate(probs, splits.y_test.cpu(), mask, splits.hierarchy, threshold, splits.exclude)
    per_depth = scores.pop("per_depth")
    row = {"dataset": dataset, "seed": seed, **asdict(settings)}
    row["protocol"] = settings.protocol
    if torch.is_tensor(threshold):  # per node: report the mean over the evaluated nodes
        cols = eval_columns(splits.hierarchy, splits.exclude)
        row["threshold_value"] = float(threshold[cols].float().mean())
    else:
        row["threshold_value"] = float(threshold)
    row.update({k: v for k, v in scores.items() if not isinstance(v, dict)})
    for depth, vals in per_depth.items():
        row[f"recall_d{depth}"] = vals["recall_micro"]
        row[f"f1_d{depth}"] = vals["f1_micro"]
    row["published_au_prc"] = PUBLISHED_AUPRC.get(dataset, math.nan)
    return row


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds += list(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ConfigError(f"no seeds in {text!r}")
    return seeds


def write_rows(rows: list[dict], path: Path) -> None:
    """Append-friendly CSV: the union of the rows' keys as columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def summary_markdown(rows: list[dict]) -> str:
    """Mean +- std over seeds of the headline scores, one line per dataset."""
    keys = ["au_prc", "macro_precision", "macro_recall", "macro_f1", "micro_f1"]
    lines = [
        "| dataset | seeds | AU(PRC) | published | macro P | macro R | macro F1 | micro F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        cells = []
        for key in keys:
            vals = np.array([r[key] for r in sub], dtype=float)
            cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}")
        pub = PUBLISHED_AUPRC.get(dataset, math.nan)
        lines.append(
            f"| {dataset} | {len(sub)} | {cells[0]} | {pub:.3f} | " + " | ".join(cells[1:]) + " |"
        )
    return "\n".join(lines) + "\n"


def run_tag(dataset: str, settings: HMCSettings) -> str:
    """Output file stem naming every setting that changes the run, so runs never overwrite each other.

    Plain MCLoss keeps `{dataset}_mcloss_{threshold}`.
    """
    parts = [dataset, settings.loss]
    if settings.loss in ("weighted", "weighted_focal"):
        parts += [settings.weights, settings.placement]
        parts += [settings.counting] if settings.counting else []
        parts += [f"omega{settings.omega:g}"] if settings.omega != 0.25 else []
    if settings.loss in ("focal", "weighted_focal"):
        parts.append(settings.measure)
    parts += [f"h{settings.heads}"] if settings.heads != 1 else []
    parts += [f"e{settings.epochs}"] if settings.epochs else []
    return "_".join([*parts, settings.threshold + ("-refit" if settings.refit else "")])


def cli_hmc(args) -> int:
    """`hml-finetune hmc`: train and score one dataset over several seeds."""
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if data_dir is None:
        raise ConfigError(
            f"--data-dir not given and {DATA_DIR_ENV} not set: download the C-HMCNN ARFF files "
            "(see docs/finetune.md) and pass their folder"
        )
    settings = HMCSettings(
        loss=args.loss,
        measure=args.measure,
        heads=args.heads,
        weights=args.weights,
        placement=args.placement,
        counting=args.counting,
        omega=args.omega,
        threshold=args.threshold,
        epochs=args.epochs,
    )
    # --refit unset: on when the threshold is tuned (the default), off for a fixed one
    settings.refit = settings.tuned if args.refit is None else args.refit
    settings.validate()
    dataset_files(data_dir, args.dataset)
    rows = []
    out = Path(args.out)
    tag = run_tag(args.dataset, settings)
    seeds = parse_seeds(args.seeds)
    for row in tqdm(
        _seed_rows(data_dir, args.dataset, settings, seeds, args), total=len(seeds), desc="seeds"
    ):
        rows.append(row)
        write_rows(rows, out / f"{tag}.csv")
        print(
            f"{args.dataset} seed {row['seed']}: AU(PRC) {row['au_prc']:.4f}  "
            f"macro R {row['macro_recall']:.4f}  macro F1 {row['macro_f1']:.4f}"
        )
    (out / f"{tag}.md").write_text(summary_markdown(rows))
    print(f"wrote {out / f'{tag}.csv'} and {out / f'{tag}.md'}")
    return 0


def _seed_job(job: tuple) -> dict:
    """One seed in a worker process with a single thread (batch-4 steps do not scale with threads)."""
    torch.set_num_threads(1)
    data_dir, dataset, settings, seed, device = job
    return run_seed(data_dir, dataset, settings, seed, progress=False, device=device)


def _seed_rows(data_dir: Path, dataset: str, settings: HMCSettings, seeds: list[int], args):
    """Result rows in seed order: in this process, or from `args.jobs` worker processes."""
    if args.jobs <= 1 or len(seeds) == 1:
        for seed in seeds:
            yield run_seed(data_dir, dataset, settings, seed, device=args.device)
        return
    jobs = [(data_dir, dataset, settings, seed, args.device) for seed in seeds]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(args.jobs, len(seeds))) as pool:
        yield from pool.imap(_seed_job, jobs)
