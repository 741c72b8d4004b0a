"""The training loop: loader -> method -> loss -> optimizer step, driven by Hugging Face Accelerate.

One code path for one CPU core, one GPU or many nodes. What it guarantees:

- The loader is built per rank (``accelerator.process_index`` / ``num_processes``) and is *not*
  passed through ``accelerator.prepare``: iterable shards must not be dispatched from rank 0.
  Its batches arrive on the device, normalised.
- It knows no particular method: it calls only the method contract (``model/contract.py``):
  forward, the teacher's schedule and update, ``set_epoch``, parameter groups, export.
- Peak lr = ``base_lr * batch_size * num_processes * grad_accum / 256``; lr, weight decay and
  teacher momentum are pure functions of the optimizer step (``train/plan.py``).
- Gradient accumulation: DDP's all-reduce is skipped (``no_sync``) on all but the last
  micro-batch. The teacher's EMA update runs once per optimizer step, before the forward of the
  first micro-batch of the cycle, so every micro-batch of one step sees the same teacher and no
  micro-step ever moves it.
- No value is read back from the device except on logging steps (and checkpoint steps); the
  collapse monitor (``train/monitor.py``) runs on logging steps only.
- Checkpoints hold model (student + teacher), optimizer, grad scaler, step, every rank's RNG
  states and data position, and the config; a resumed run repeats the uninterrupted run's
  trajectory (bit-identical on CPU with ``train.deterministic``).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.data_issues import check_bad_fraction
from pipeline.views import MAX_OVERLAP_TRIES
from train.checkpoint import load_resume, rng_state, save_checkpoint, set_rng_state
from train.ckpt_fit import RESUME_KEYS, check_state_fits
from train.config import Config, config_to_dict, flat_items, save_config
from train.logging import RunLogger, StepMeter, tensorboard_available
from train.monitor import collapse_stats
from train.nonfinite import NonFiniteError, NonFiniteGuard, finite_flag, nonfinite_in_state
from train.optim import build_optimizer, clip_per_parameter_, params_with_grad, set_lr_wd
from train.plan import Plan, make_plan
from train.resume import Position, restore
from train.writable import check_output_writable

if TYPE_CHECKING:
    from pipeline.batch import ViewBatch

# logged beside bad_samples (overlap_violations: views kept although they break the recipe's overlap rule)
DATA_COUNTS = ("bad_shards", "empty_shards", "bad_reads", "samples", "overlap_violations")

__all__ = ["Plan", "RunResult", "make_plan", "parameter_digest", "setup_reproducibility", "train"]


@dataclass
class RunResult:
    """What :func:`train` returns: the last step and the paths of the run's checkpoint, config, log,
    TensorBoard directory and exported backbone files."""

    step: int
    checkpoint: Path | None
    config: Path
    log: Path
    tensorboard: Path | None
    exported: dict[str, Path]
    summary: str = ""  # "done: step N/M in S s; loss a -> b; images/s, data wait" (main process)
    is_main: bool = True  # whether this process is the one that reports

    def report(self) -> str:
        """The closing lines ``python -m train`` prints: summary and where everything was written."""
        lines = [f"\n{self.summary}", f"  checkpoint  {self.checkpoint}", f"  config      {self.config}"]
        tb = f"   (TensorBoard: tensorboard --logdir {self.tensorboard})" if self.tensorboard else ""
        lines.append(f"  log         {self.log}{tb}")
        lines += [f"  exported    {p}   [{kind}]" for kind, p in self.exported.items()]
        return "\n".join(lines)


def setup_reproducibility(cfg: Config) -> None:
    """Threads and deterministic kernels; must run before CUDA is initialised."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def parameter_digest(model: nn.Module) -> str:
    """Hash of every parameter's bytes: equal across ranks iff the weights are bit-identical."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tracker_config(cfg: Config) -> dict[str, Any]:
    # TensorBoard's hparams accept only numbers, strings and bools
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_items(config_to_dict(cfg)).items()}


def _scalar_terms(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError("the method's forward must return a dict with a 'loss' entry")
    return {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


class Run:
    """One training run: built from the config, then ``resume`` (optional), ``loop``, ``finish``."""

    def __init__(self, cfg: Config) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

        from model.contract import check_method
        from model.registry import METHODS
        from pipeline.loader import build_loader

        setup_reproducibility(cfg)
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.use_tb = cfg.log.tensorboard and tensorboard_available()
        self.accelerator = acc = Accelerator(
            cpu=cfg.train.cpu,
            mixed_precision=cfg.train.mixed_precision,
            log_with=["tensorboard"] if self.use_tb else None,
            project_config=ProjectConfiguration(project_dir=str(self.out_dir), logging_dir=str(self.out_dir / "tensorboard")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.train.find_unused_parameters)],
        )
        self.rank, self.world = acc.process_index, acc.num_processes
        self.say = acc.print
        if acc.is_main_process:  # a read-only or full output folder: one line now, not a traceback later
            check_output_writable(self.out_dir / "log.jsonl")

        set_seed(cfg.train.seed)  # identical initial weights on every rank
        method = METHODS[cfg.method.name](dict(cfg.method.options))
        check_method(method)
        if self.world > 1 and cfg.train.sync_bn:
            if acc.device.type == "cuda":
                # student and teacher alike: both see per-rank slices of the same global batch
                method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
            else:
                self.say("note: SyncBatchNorm needs GPUs; BatchNorm statistics stay per process on CPU")
        if cfg.train.compile:
            if not callable(getattr(method, "compile_step", None)):
                raise ValueError(f"train.compile: method {cfg.method.name!r} has no compile_step(); set train.compile=false")
            method.compile_step()
        set_seed(cfg.train.seed + self.rank)  # ranks differ from here on (e.g. drop-path masks)

        self.loader = build_loader(cfg.data, rank=self.rank, world_size=self.world, device=acc.device)
        self.plan = make_plan(cfg, len(self.loader), self.world)
        optimizer = build_optimizer(cfg.optim, method, self.plan.peak_lr)
        self.model, self.optimizer = acc.prepare(method, optimizer)
        self.core = acc.unwrap_model(self.model)
        self.pos = Position()
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None
        self.last_saved_step = -1
        self.logger: RunLogger | None = None
        self.guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)

    # --- resume ----------------------------------------------------------------------------------

    def resume(self, resume: str | None) -> None:
        """Continue from ``resume`` ("auto": the newest checkpoint, if any; or a path)."""
        expected, current = self.core.state_dict(), config_to_dict(self.cfg)

        def fits(state: dict[str, Any]) -> None:  # one line naming the mismatch; "auto" falls back past it
            check_state_fits(state, expected, current, RESUME_KEYS)

        found = load_resume(resume, self.ckpt_dir, check=fits) if resume else None
        if resume == "auto" and found is None:
            self.say(f"--resume auto: no checkpoint in {self.ckpt_dir}, starting from scratch")
        if found is None:
            return
        path, state = found
        self.pos, changed = restore(
            state, self.core, self.optimizer, self.accelerator.scaler, self.loader, self.plan, self.cfg, self.rank, self.world
        )
        self.resumed_from = self.last_saved = path
        self.last_saved_step = self.pos.step
        self.say(f"resumed from {path} at step {self.pos.step} (epoch {self.pos.epoch}, batch {self.pos.batch_in_epoch})")
        if changed:
            diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            self.say(f"config differs from the checkpoint's: {diff}")

    # --- save ------------------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Collective: every rank contributes its RNG and data position; the main process writes."""
        from accelerate.utils import gather_object

        acc, pos = self.accelerator, self.pos
        # every rank holds the same weights, so every rank stops here alike (no rank waits below)
        bad = nonfinite_in_state({"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict()})
        if bad is not None:
            raise NonFiniteError(
                f"step {pos.step}: {bad} holds non-finite values; checkpoint not written, the existing ones are kept "
                f"(newest: {self.last_saved or 'none'}); lower optim.base_lr or set optim.clip_grad_norm, then --resume auto"
            )
        mine = {
            "rank": self.rank,
            "step": pos.step,
            "batch_in_epoch": pos.batch_in_epoch,
            "rng": rng_state(),
            "loader": self.loader.state_dict(),
            "param_digest": parameter_digest(self.core) if self.world > 1 else None,
        }
        ranks = gather_object([mine]) if self.world > 1 else [mine]
        path = None
        if acc.is_main_process:
            digests = {r["param_digest"] for r in ranks}
            if len(digests) > 1:
                warnings.warn(f"step {pos.step}: weights differ between ranks ({len(digests)} distinct digests)", stacklevel=1)
            state = {
                "format": 1,
                "step": pos.step,
                "epoch": pos.epoch,
                "batch_in_epoch": pos.batch_in_epoch,
                "model": self.core.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "config": config_to_dict(self.cfg),
                "ranks": ranks,
                "world_size": self.world,
            }
            path = save_checkpoint(state, self.ckpt_dir, pos.step, self.cfg.checkpoint.keep_last)
            save_config(self.cfg, self.ckpt_dir / "config.yaml")
            self.logger.event(event="checkpoint", step=pos.step, path=str(path))
        acc.wait_for_everyone()
        self.last_saved, self.last_saved_step = path or self.last_saved, pos.step
        return path

    # --- steps -----------------------------------------------------------------------------------

    def micro_step(self, batch: ViewBatch, micro: int) -> dict[str, Any]:
        """Forward and backward of one micro-batch; the teacher moves before the first of a cycle."""
        accum, plan = self.plan.grad_accum, self.plan
        if micro == 0:
            self.core.update_teacher(float(self.core.teacher_momentum(self.pos.step, plan.total_steps)))
        sync = micro == accum - 1
        with nullcontext() if sync or self.world == 1 else self.accelerator.no_sync(self.model):
            out = self.model(batch)
            self.accelerator.backward(out["loss"] / accum if accum > 1 else out["loss"])
        return out

    def optimizer_step(self, step_terms: dict[str, torch.Tensor]) -> tuple[float, float]:
        """Schedules, clipping, the non-finite check and the optimizer step; returns this step's (lr, wd).

        A step whose loss or gradients are non-finite is skipped and counted (``train/nonfinite.py``)."""
        o, step = self.cfg.optim, self.pos.step
        lr, wd = self.plan.lr(step), self.plan.wd(step)
        set_lr_wd(self.optimizer, lr, wd)
        grad_norm = None
        if o.clip_grad_norm is not None or o.clip_grad_per_param is not None:
            self.accelerator.unscale_gradients(self.optimizer)
            params = params_with_grad(self.optimizer)
            if o.clip_grad_per_param is not None:
                clip_per_parameter_([p.grad for p in params], o.clip_grad_per_param)
            if o.clip_grad_norm is not None:
                grad_norm = step_terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, o.clip_grad_norm, foreach=True)
        if self.guard.enabled and not self.step_is_finite(step_terms, grad_norm):
            self.optimizer.zero_grad(set_to_none=True)  # skipped: weights and optimizer state untouched
            return lr, wd
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr, wd

    def step_is_finite(self, step_terms: dict[str, torch.Tensor], grad_norm: torch.Tensor | None) -> bool:
        """Whether this step may update the weights. One host read of one device boolean per step:
        the documented cost of ``train.max_nonfinite_steps > 0`` (see ``train/nonfinite.py``)."""
        # The loss differs between ranks while the all-reduced gradients do not: with several
        # processes only the gradients decide, so that every rank skips the same steps.
        loss = step_terms.get("loss") if self.world == 1 else None
        if self.accelerator.scaler is not None:
            # fp16: the grad scaler skips non-finite gradients itself (and backs off its scale);
            # here non-finite losses are only counted, and stop the run after N in a row
            self.guard.step_ok(finite_flag(loss, []), self.pos.step + 1, str(self.last_saved or "") or None)
            return True
        grads = [] if grad_norm is not None else [p.grad for p in params_with_grad(self.optimizer)]
        flag = finite_flag(loss, grads, grad_norm)
        return self.guard.step_ok(flag, self.pos.step + 1, str(self.last_saved or "") or None)

    # --- the loop --------------------------------------------------------------------------------

    def start_logging(self) -> Path:
        """Config beside the checkpoints, trackers, the JSON log's start record and the banner."""
        cfg, plan, acc = self.cfg, self.plan, self.accelerator
        config_path = self.ckpt_dir / "config.yaml"
        if acc.is_main_process:
            save_config(cfg, config_path)
        if self.use_tb:
            acc.init_trackers("densessl", config=_tracker_config(cfg))
        self.logger = RunLogger(acc, self.out_dir, plan.max_steps, self.pos.step, cfg.log.progress, self.use_tb)
        self.logger.event(
            event="resume" if self.resumed_from else "start",
            step=self.pos.step,
            checkpoint=str(self.resumed_from) if self.resumed_from else None,
            processes=self.world,
            device=str(acc.device),
            steps_per_epoch=plan.steps_per_epoch,
            total_steps=plan.total_steps,
            peak_lr=plan.peak_lr,
        )
        self.say(
            f"{cfg.method.name}: {self.world} process(es) on {acc.device}, {plan.steps_per_epoch} steps/epoch x "
            f"{cfg.train.epochs} epochs = {plan.total_steps} steps (stop at {plan.max_steps}), global batch "
            f"{plan.images_per_micro * plan.grad_accum}, peak lr {plan.peak_lr:.4g}"
        )
        return config_path

    def loop(self) -> None:
        """Epochs of micro-batches until ``plan.max_steps`` optimizer steps or the last epoch."""
        cfg, plan, pos = self.cfg, self.plan, self.pos
        meter = StepMeter()
        step_terms: dict[str, torch.Tensor] = {}
        self.started = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        while pos.step < plan.max_steps and pos.epoch < cfg.train.epochs:
            batches = self.start_epoch()
            while pos.batch_in_epoch < plan.micro_batches_per_epoch and pos.step < plan.max_steps:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    raise RuntimeError(
                        f"rank {self.rank}: the loader ended after {pos.batch_in_epoch} batches of epoch {pos.epoch}, "
                        f"but its len() promised {plan.batches_per_epoch}"
                    ) from None
                meter.data_time += time.perf_counter() - t0
                micro = pos.batch_in_epoch % plan.grad_accum
                out = self.micro_step(batch, micro)
                for k, v in _scalar_terms(out).items():
                    v = v.float() / plan.grad_accum  # logged terms: the mean over the step's micro-batches
                    step_terms[k] = step_terms[k] + v if k in step_terms else v
                pos.batch_in_epoch += 1
                meter.micro_batches += 1
                if micro != plan.grad_accum - 1:
                    continue
                lr, wd = self.optimizer_step(step_terms)
                pos.step += 1
                meter.add_terms(step_terms)
                step_terms = {}
                self.logger.step_done()
                self.after_step(meter, out, lr, wd)
            if pos.batch_in_epoch >= plan.micro_batches_per_epoch:
                pos.epoch += 1
            if hasattr(batches, "close"):
                batches.close()  # stop this iteration's workers now (max_steps reached mid-epoch)

    def start_epoch(self):
        """Iterator over this epoch's batches, with the RNG as the uninterrupted run had it."""
        pos = self.pos
        if not pos.mid_epoch:
            if pos.pending_rng is not None:  # state as it was right before this epoch's iter() in the first run
                set_rng_state(pos.pending_rng)
                pos.pending_rng = None
            self.loader.set_epoch(pos.epoch)
            pos.batch_in_epoch = 0
        self.core.set_epoch(pos.epoch)
        batches = iter(self.loader)
        if pos.pending_rng is not None:  # mid-epoch: the first run's iter() happened before the checkpoint
            set_rng_state(pos.pending_rng)
            pos.pending_rng = None
        pos.mid_epoch = False
        return batches

    def after_step(self, meter: StepMeter, out: dict[str, Any], lr: float, wd: float) -> None:
        """Logging (with the collapse monitor) and checkpoints on their steps."""
        cfg, plan, pos = self.cfg, self.plan, self.pos
        last = pos.step >= plan.max_steps or (
            pos.epoch == cfg.train.epochs - 1 and pos.batch_in_epoch >= plan.micro_batches_per_epoch
        )
        if pos.step % cfg.log.every_steps == 0 or last:
            scalars = {"lr": lr, "wd": wd, "momentum": float(self.core.teacher_momentum(pos.step - 1, plan.total_steps))}
            scalars["nonfinite_steps"] = self.guard.total
            if isinstance(out.get("embeddings"), torch.Tensor):
                scalars.update({k: float(v) for k, v in collapse_stats(out["embeddings"]).items()})
            data_stats = getattr(self.loader, "stats", {})
            record = self.logger.log(
                meter,
                pos.step,
                pos.epoch,
                scalars,
                plan.images_per_micro,
                int(data_stats.get("bad_samples", 0)),
                int(data_stats.get("recovered_samples", 0)),
                {k: int(data_stats.get(k, 0)) for k in DATA_COUNTS},
            )
            # the record is reduced over ranks, so every rank takes the same decision
            issues = getattr(self.loader, "issues", None)
            check_bad_fraction(
                record, getattr(self.loader, "shard_count", 0), cfg.data.max_bad_fraction, issues.shard_names() if issues else []
            )
        if pos.step % cfg.checkpoint.every_steps == 0 or last:
            t_save = time.perf_counter()
            self.save()
            meter.start += time.perf_counter() - t_save  # checkpoint time is not training throughput

    # --- the end ---------------------------------------------------------------------------------

    def finish(self, config_path: Path) -> RunResult:
        """Final checkpoint (if the last step has none), export, closing records and the summary."""
        acc, pos = self.accelerator, self.pos
        if pos.step != self.last_saved_step:  # e.g. the run was already complete when resumed
            self.save()
        exported: dict[str, Path] = {}
        if acc.is_main_process and self.cfg.checkpoint.export:
            exported = self.core.export(self.out_dir / "exported")
        seconds = time.perf_counter() - self.started
        self.logger.event(event="end", step=pos.step, seconds=seconds, exported={k: str(v) for k, v in exported.items()})
        self.logger.close()
        acc.wait_for_everyone()
        if self.use_tb:
            acc.end_training()
        if self.last_saved is None:
            found = sorted(self.ckpt_dir.glob("ckpt-*.pt"))
            self.last_saved = found[-1] if found else None
        summary = f"done: step {pos.step}/{self.plan.total_steps} in {seconds:.0f} s; {self.logger.summary()}"
        if self.guard.total:
            summary += f"; {self.guard.total} step(s) skipped for a non-finite loss or gradients"
        last = self.logger.last or {}
        summary += (
            f"; data: {last.get('bad_samples', 0)} bad samples, {last.get('bad_shards', 0)} bad shards "
            f"({last.get('empty_shards', 0)} empty)"
        )
        if last.get("overlap_violations"):
            summary += f", {last['overlap_violations']} views breaking the overlap rule after {MAX_OVERLAP_TRIES} draws"
        return RunResult(
            pos.step,
            self.last_saved,
            config_path,
            self.out_dir / "log.jsonl",
            self.out_dir / "tensorboard" if self.use_tb else None,
            exported,
            summary,
            acc.is_main_process,
        )


def train(cfg: Config, resume: str | None = None) -> RunResult:
    """Run (or continue, with ``resume="auto"`` or a checkpoint path) the configured pretraining."""
    run = Run(cfg)
    run.resume(resume)
    config_path = run.start_logging()
    run.loop()
    return run.finish(config_path)
