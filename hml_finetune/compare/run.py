"""`hml-finetune compare`: the grid {starts} x {modes} x {losses} x {seeds} on one labelled data set,
each cell a `run_finetune` in output_dir/runs/<start>-<mode>-<loss>-s<seed>/, then the report.

It makes what the grid needs first: the sample shards when missing, and for an SSL start whose
export is missing, pretraining (resuming its last checkpoint when there is one) and the export.
Resumable: a cell whose metrics.json exists is not rerun (unless its export is newer). A failed cell is recorded with its
error and the grid goes on; a start without weights (a path not filled in, an ImageNet start
without a file or the hub) is skipped, with the reason in the report; an interrupted grid
is reported as partial. The report is rewritten after every cell. `--cells I/N` runs one share of
the cells (a SLURM job array, slurm/compare.sbatch; hml_finetune/compare/share.py).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import socket
import traceback
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hml_finetune.compare.config import CompareConfig, LossSetting, StartConfig
from hml_finetune.compare.report import Cell, write_report
from hml_finetune.compare.share import cell_lock, cell_running, file_lock, select_cells
from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.train import run_finetune
from ssl_benthic.core.checkpoints import LAST, checkpoint_dir, has_checkpoints
from ssl_benthic.core.config import ConfigError, load_config, save_config
from ssl_benthic.core.errors import Interrupted
from ssl_benthic.data.sample.make_sample import GENERATOR, make_sample
from ssl_benthic.weights.backbones import EXPORT_META, BackboneError, read_export

__all__ = [
    "grid_cells",
    "cell_config",
    "ensure_sample",
    "ensure_export",
    "imagenet_skip_reason",
    "missing_weights_reason",
    "loss_pairs",
    "run_compare",
    "cli_compare",
]

HUB_TIMEOUT_S = 3.0


def grid_cells(cfg: CompareConfig) -> list[Cell]:
    """Every cell of the grid, in start, mode, loss, seed order (status 'missing')."""
    runs = Path(cfg.output_dir) / "runs"
    return [
        Cell(s.name, mode, loss.name, seed, runs / f"{s.name}-{mode}-{loss.name}-s{seed}")
        for s in cfg.starts
        for mode in cfg.modes
        for loss in cfg.losses
        for seed in cfg.seeds
    ]


def cell_overrides(
    cfg: CompareConfig, start: StartConfig, loss: LossSetting, cell: Cell
) -> list[str]:
    """The finetune overrides of one cell, in the order they apply (later ones win)."""
    out: list[str] = []
    if cfg.data is not None:
        out += [f"data.{split}={path}" for split, path in cfg.data.items()]
    elif cfg.sample is not None:
        out += [f"data.{split}={Path(cfg.sample) / split}" for split in ("train", "val", "test")]
    if cfg.feature_cache:
        out.append(f"data.feature_cache_dir={Path(cfg.output_dir) / 'feature_cache'}")
    out += cfg.base_overrides
    out.append(f"backbone.weights={start.weights}")
    out += _export_name(start)
    if start.weights_file is not None:
        out.append(f"backbone.weights_file={start.weights_file}")
    out += start.overrides
    out += [f"mode={cell.mode}", *cfg.mode_overrides.get(cell.mode, [])]
    out += loss.overrides
    return out + [f"seed={cell.seed}", f"output_dir={cell.run_dir}"]


def _export_name(start: StartConfig) -> list[str]:
    """[backbone.name=<the export's timm name>] for an export or import that records one."""
    if not start.is_export or not Path(start.weights).exists():
        return []
    try:
        name = read_export(start.weights)[1].get("timm_name")
    except (BackboneError, ValueError):
        return []  # the cell's own run names what is wrong with the export
    return [f"backbone.name={name}"] if name else []


def cell_config(cfg: CompareConfig, cell: Cell) -> FinetuneConfig:
    """The base recipe with the cell's overrides (fails naming the key and the base file)."""
    start = next(s for s in cfg.starts if s.name == cell.start)
    loss = next(x for x in cfg.losses if x.name == cell.loss)
    return load_config(FinetuneConfig, cfg.base, cell_overrides(cfg, start, loss, cell))


def loss_pairs(cfg: CompareConfig) -> list[tuple[str, str]]:
    """(weighted setting, MCLoss setting) names the report compares: every setting whose cells
    run loss.name=weighted with every one that runs mcloss and has the same overrides apart from
    `loss.*` ones (e.g. both with threshold=0.5); [] when the grid lacks either loss."""
    names: dict[str, list[tuple[str, tuple[str, ...]]]] = {"weighted": [], "mcloss": []}
    for loss in cfg.losses:
        first = next(c for c in grid_cells(cfg) if c.loss == loss.name)
        try:
            resolved = cell_config(cfg, first).loss.name
        except ConfigError:
            continue  # its cells fail and say why
        if resolved in names:
            rest = tuple(sorted(o for o in loss.overrides if not o.startswith("loss.")))
            names[resolved].append((loss.name, rest))
    return [
        (w, m)
        for w, w_rest in names["weighted"]
        for m, m_rest in names["mcloss"]
        if w_rest == m_rest
    ]


def ensure_sample(cfg: CompareConfig) -> None:
    """Create the sample shards with `make_sample(sample, **sample_kwargs)` unless they exist; a
    folder that holds anything but the sample (e.g. one's own split folders) is refused untouched.
    Under a lock beside the folder (`.NAME.lock`): the tasks of an array draw it once, and none
    replaces the sample under another that already reads it."""
    if cfg.sample is None:
        return
    folder = Path(cfg.sample)
    if _is_sample(folder):
        return
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(
            f"sample: {folder} exists and is not the synthetic sample (no sample manifest.json "
            f"from {GENERATOR}); 'sample' only draws the sample into a new folder, so nothing was "
            "written there. For your own shards set data: {train: DIR, val: DIR, test: DIR} and "
            "sample: null"
        )
    allowed = set(inspect.signature(make_sample).parameters) - {"out_dir"}
    wrong = sorted(set(cfg.sample_kwargs) - allowed)
    if wrong:
        raise ConfigError(
            f"sample_kwargs: unknown key(s) {wrong}; make_sample takes {sorted(allowed)}"
        )
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if _is_sample(folder):  # another task drew it while this one waited
            return
        print(f"[compare] creating the sample shards in {cfg.sample}")
        make_sample(cfg.sample, **cfg.sample_kwargs)


def _is_sample(folder: Path) -> bool:
    """Whether `folder` holds a synthetic sample: its top manifest.json names the generator."""
    try:
        top = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(top, dict) and top.get("generator") == GENERATOR


def _pretrain_steps(start: StartConfig) -> tuple[list[str], Path]:
    """(pretraining overrides with output_dir, that output_dir) of an SSL start's recipe."""
    from ssl_benthic.pretrain.run import load_recipe

    spec = start.pretrain
    assert spec is not None
    overrides = list(spec.overrides)
    if spec.output_dir is not None:
        overrides.append(f"output_dir={spec.output_dir}")
    return overrides, Path(load_recipe(spec.recipe, overrides).output_dir)


def ensure_export(start: StartConfig) -> None:
    """For an SSL start with a `pretrain` spec and no export yet: pretrain (resuming the last
    checkpoint when present) and export the backbone to `start.weights`."""
    if not start.is_export or start.pretrain is None:
        return
    try:
        read_export(start.weights)
        return
    except BackboneError:
        pass
    from ssl_benthic.pretrain.run import load_recipe, pretrain
    from ssl_benthic.weights.export import export_backbone

    overrides, out = _pretrain_steps(start)
    print(f"[compare] start {start.name}: no export at {start.weights}; pretraining in {out}")
    pretrain(
        load_recipe(start.pretrain.recipe, overrides),
        resume="last" if has_checkpoints(out) else None,
    )
    export_backbone(checkpoint_dir(out) / LAST, start.weights, overwrite=True)


def missing_weights_reason(start: StartConfig) -> str | None:
    """Why a start has no weights to run with (a path not filled in or not downloaded yet), else None."""
    if start.is_export and start.pretrain is None and not Path(start.weights).exists():
        return (
            f"skipped: no weights at {start.weights} (import the downloaded file with "
            "`ssl-benthic import-weights FILE --out DIR` and set the start's weights to DIR)"
        )
    if start.weights_file is not None and not Path(start.weights_file).is_file():
        return f"skipped: no weights file at {start.weights_file} (set the start's weights_file)"
    return None


def imagenet_skip_reason(start: StartConfig) -> str | None:
    """Why an ImageNet start cannot run (no weights_file and the hub unreachable), else None."""
    if start.weights != "imagenet" or start.weights_file is not None:
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return f"skipped: no weights (no weights_file and HF_HUB_OFFLINE is set); {_IMAGENET_HINT}"
    try:
        socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S).close()
    except OSError as exc:
        return (
            f"skipped: no weights (no weights_file and {host} unreachable: {exc}); {_IMAGENET_HINT}"
        )
    return None


_IMAGENET_HINT = "set the start's weights_file to a timm weights file (model.safetensors)"


def _read_metrics(cell: Cell) -> dict | None:
    path = cell.run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _export_newer(cfg: CompareConfig, cell: Cell, than: Path) -> bool:
    """True when the cell's start is an export written after the file `than` of the cell."""
    start = next(s for s in cfg.starts if s.name == cell.start)
    if not start.is_export:
        return False
    try:
        weights = read_export(start.weights)[0]
    except BackboneError:
        return False
    return weights.stat().st_mtime_ns > than.stat().st_mtime_ns


def _restart(cfg: CompareConfig, cell: Cell) -> dict[str, Any]:
    """How a cell without results starts: an interrupted run resumes from its last checkpoint,
    unless its export is newer; anything else in its folder is stale and replaced."""
    last = checkpoint_dir(cell.run_dir) / LAST
    if last.is_file() and not _export_newer(cfg, cell, last):
        print(f"[compare] {cell.name}: resuming its interrupted run")
        return {"resume": "last"}
    return {"overwrite": True}


def run_cell(cfg: CompareConfig, cell: Cell) -> None:
    """Run one cell with `run_finetune`; any exception but SIGTERM's `Interrupted` marks it failed
    (error.txt has the trace)."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    error_file = cell.run_dir / "error.txt"
    error_file.unlink(missing_ok=True)
    try:
        run_finetune(cell_config(cfg, cell), **_restart(cfg, cell))
        cell.result = _read_metrics(cell)
        if cell.result is None:
            raise RuntimeError(f"run_finetune wrote no {cell.run_dir / 'metrics.json'}")
        cell.status, cell.error = "done", None
    except Interrupted:  # SIGTERM: last.ckpt saved; the grid stops here and resumes the cell later
        raise
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the grid goes on
        cell.status, cell.error = "failed", f"{type(exc).__name__}: {exc}"
        error_file.write_text(traceback.format_exc())
        print(f"[compare] {cell.name} FAILED: {cell.error}")


def _commands(cfg: CompareConfig, command: str | None) -> list[str]:
    resolved = Path(cfg.output_dir) / "resolved_compare.yaml"
    lines = [command] if command else []
    lines.append(f"# or, exactly this grid: hml-finetune compare --config {resolved}")
    for s in cfg.starts:
        if s.is_export and s.pretrain is not None:
            lines.append(f"# start {s.name} when its export is missing:")
            try:
                overrides, out = _pretrain_steps(s)
            except ConfigError as exc:
                lines.append(f"# (its pretraining recipe does not load: {exc})")
                continue
            lines.append(
                shlex.join(["ssl-benthic", "pretrain", "--config", s.pretrain.recipe, *overrides])
            )
            lines.append(
                shlex.join(
                    [
                        "ssl-benthic",
                        "export",
                        str(checkpoint_dir(out) / LAST),
                        "--out",
                        s.weights,
                    ]
                )
            )
    return lines


def _configs(cfg: CompareConfig) -> list[Path]:
    paths = [Path(cfg.output_dir) / "resolved_compare.yaml", Path(cfg.base)]
    for s in cfg.starts:
        if s.is_export:
            paths.append(Path(s.weights) / EXPORT_META)
    return [p for p in paths if p.is_file()]


def _prepare_starts(cfg: CompareConfig, cells: list[Cell]) -> None:
    """Skip ImageNet starts without weights; make missing SSL exports. A failure marks that
    start's pending cells failed (skipped/failed cells are retried on the next run)."""
    for start in cfg.starts:
        pending = [c for c in cells if c.start == start.name and c.status == "missing"]
        if not pending:
            continue
        reason = missing_weights_reason(start) or imagenet_skip_reason(start)
        status = "skipped"
        if reason is None:
            try:
                ensure_export(start)
            except Interrupted:  # SIGTERM while pretraining: resumed by the next run
                raise
            except Exception as exc:  # noqa: BLE001 - recorded on the start's cells
                reason, status = (
                    f"pretraining/export for start {start.name} failed: {exc}",
                    "failed",
                )
                print(f"[compare] {reason}")
        if reason is not None:
            for c in pending:
                c.status, c.error = status, reason


def _setup(cfg: CompareConfig) -> list[Cell]:
    """The grid's cells with their state on disk, after making what they need (sample, exports);
    under a lock, so that the tasks of an array do it once."""
    ensure_sample(cfg)  # first: a refused sample folder leaves nothing written anywhere
    out = Path(cfg.output_dir)
    with file_lock(out / "setup.lock"):
        save_config(cfg, out / "resolved_compare.yaml")
        cells = grid_cells(cfg)
        for c in cells:
            c.result = _read_metrics(c)
            c.status = "done" if c.result is not None else "missing"
        _prepare_starts(cfg, cells)
    for c in cells:
        if c.status == "done" and _export_newer(cfg, c, c.run_dir / "metrics.json"):
            print(f"[compare] {c.name}: its export is newer than its metrics.json: rerun")
            c.status, c.result = "missing", None
    return cells


def _run_locked(cfg: CompareConfig, cell: Cell) -> None:
    """Run the cell unless another process runs it now (or finished it meanwhile: a metrics.json
    newer than the cell's export)."""
    with cell_lock(cell.run_dir) as held:
        metrics = cell.run_dir / "metrics.json"
        if not held:
            print(f"[compare] {cell.name}: running in another process, skipped here")
        elif metrics.is_file() and not _export_newer(cfg, cell, metrics):
            cell.status, cell.result = "done", _read_metrics(cell)
        else:
            run_cell(cfg, cell)


def _refresh(cfg: CompareConfig, cells: list[Cell]) -> list[Cell]:
    """Read the results other processes wrote; return the cells still without one (running, or
    not started). A cell whose run failed elsewhere counts as failed (its error.txt)."""
    pending = []
    for c in cells:
        if c.status != "missing":
            continue
        error, metrics = c.run_dir / "error.txt", c.run_dir / "metrics.json"
        if metrics.is_file() and not _export_newer(cfg, c, metrics):
            c.status, c.result = "done", _read_metrics(c)
        elif error.is_file() and not cell_running(c.run_dir):
            lines = error.read_text().strip().splitlines()
            c.status, c.error = "failed", lines[-1] if lines else "failed"
        else:
            pending.append(c)
    return pending


def run_compare(
    cfg: CompareConfig, *, command: str | None = None, share: tuple[int, int] | None = None
) -> Path | None:
    """Run (or resume) the grid and write the report; return output_dir/report.md.

    `command`: the command line that started it, written into the report. `share` (I, N): run
    only the I-th of N shares of the cells (`select_cells`), as one task of a job array; the
    report is written by the task that finds every cell with a result, else None is returned.
    Each cell runs under a lock, so two processes never run the same one.
    """
    cfg.validate()
    cfg.check_inputs()
    out = Path(cfg.output_dir)
    cells = _setup(cfg)
    report = dict(
        commands=_commands(cfg, command),
        generic=[s.name for s in cfg.starts if s.is_generic],
        loss_pairs=loss_pairs(cfg),
    )
    todo = [c for c in select_cells(cells, share) if c.status == "missing"]
    counts = Counter(c.status for c in cells)
    part = f" (share {share[0]}/{share[1]})" if share else ""
    print(
        f"[compare] {len(cells)} cells: {counts['done']} done before, "
        f"{counts['skipped'] + counts['failed']} skipped or failed at setup, {len(todo)} to run{part}"
    )
    try:
        for i, cell in enumerate(todo, 1):
            print(f"[compare] ({i}/{len(todo)}) {cell.name}")
            _run_locked(cfg, cell)
            if share is None:
                write_report(out, cells, configs=_configs(cfg), plots=False, **report)
    except KeyboardInterrupt:
        if share is None:
            write_report(out, cells, configs=_configs(cfg), **report)
            print(f"[compare] interrupted: partial report in {out / 'report.md'}")
        raise
    with file_lock(out / "report.lock"):
        pending = _refresh(cfg, cells)
        if pending:
            print(
                f"[compare] {len(pending)} cells still without results ({pending[0].name}, ...): "
                "the report is written by the process that finishes the last one"
            )
            return None
        return write_report(out, cells, configs=_configs(cfg), **report)


def cli_compare(args: argparse.Namespace) -> int:
    """`hml-finetune compare --config F [--cells I/N] [key=value ...]`: 0 when every runnable cell
    (of the share) is done."""
    cfg = load_config(CompareConfig, args.config, args.overrides)
    command = shlex.join(["hml-finetune", "compare", "--config", args.config, *args.overrides])
    share = getattr(args, "cells", None)
    path = run_compare(cfg, command=command, share=share)
    if path is None:
        mine = select_cells(grid_cells(cfg), share)
        failed = sorted(c.name for c in mine if (c.run_dir / "error.txt").is_file())
        if failed:
            print(f"failed cells: {', '.join(failed)} (see their error.txt)")
        return 1 if failed else 0
    rows = json.loads((path.parent / "results.json").read_text())
    failed = sorted(
        {r["start"] + "-" + r["mode"] + "-" + r["loss"] for r in rows if r["status"] == "failed"}
    )
    print(f"report: {path}")
    if failed:
        print(f"failed cells in: {', '.join(failed)} (see {path})")
    return 1 if failed else 0
