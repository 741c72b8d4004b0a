"""The training loop: loader -> method -> loss -> optimizer step, driven by Hugging Face Accelerate.

One code path for one CPU core, one GPU or many nodes. What it guarantees:

- The loader is built per rank (``accelerator.process_index`` / ``num_processes``) and is *not*
  passed through ``accelerator.prepare``: iterable shards must not be dispatched from rank 0.
  Its batches arrive on the device, normalised.
- Peak lr = ``base_lr * batch_size * num_processes * grad_accum / 256``; lr, weight decay and
  teacher momentum are pure functions of the optimizer step (``train/schedules.py``).
- Gradient accumulation: DDP's all-reduce is skipped (``no_sync``) on all but the last
  micro-batch. The teacher's EMA update runs once per optimizer step, before the forward of the
  first micro-batch of the cycle, so every micro-batch of one step sees the same teacher and no
  micro-step ever moves it.
- No value is read back from the device except on logging steps (and checkpoint steps).
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
from typing import Any

import torch
from torch import nn

from train.checkpoint import load_checkpoint, resolve_resume, rng_state, save_checkpoint, set_rng_state
from train.config import Config, config_to_dict, flat_items, save_config
from train.logging import RunLogger, StepMeter, tensorboard_available
from train.optim import build_optimizer, clip_global_, clip_per_parameter_, grads_of, set_lr_wd
from train.schedules import cosine, scaled_lr, teacher_momentum, warmup_cosine

DEFAULT_TEACHER_MOMENTUM = 0.996  # only for methods that do not define teacher_momentum()


@dataclass
class Plan:
    """The run's length and schedule constants, derived from the config and the loader."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr: float
    images_per_micro: int  # global images per micro-batch

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)


@dataclass
class RunResult:
    step: int
    checkpoint: Path | None
    config: Path
    log: Path
    tensorboard: Path | None
    exported: dict[str, Path]


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


def make_plan(cfg: Config, loader_len: int, num_processes: int) -> Plan:
    accum = cfg.train.grad_accum
    steps_per_epoch = loader_len // accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"an epoch has {loader_len} batches per rank, fewer than train.grad_accum={accum}: "
            f"raise data.samples_per_epoch or lower data.batch_size"
        )
    peak = scaled_lr(cfg.optim.base_lr, cfg.data.batch_size, num_processes, accum)
    floor = cfg.optim.min_lr if cfg.optim.min_lr is not None else cfg.optim.min_lr_ratio * peak
    total = cfg.train.epochs * steps_per_epoch
    warmup = min(int(round(cfg.optim.warmup_epochs * steps_per_epoch)), total)
    return Plan(loader_len, steps_per_epoch, total, warmup, peak, floor, cfg.data.batch_size * num_processes)


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


def train(cfg: Config, resume: str | None = None) -> RunResult:
    """Run (or continue, with ``resume="auto"`` or a checkpoint path) the configured pretraining."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, gather_object, set_seed

    from model.registry import METHODS
    from pipeline.loader import build_loader

    setup_reproducibility(cfg)
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    use_tb = cfg.log.tensorboard and tensorboard_available()
    accelerator = Accelerator(
        cpu=cfg.train.cpu,
        mixed_precision=cfg.train.mixed_precision,
        log_with=["tensorboard"] if use_tb else None,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "tensorboard")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.train.find_unused_parameters)],
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    say = accelerator.print

    # --- model: identical initial weights on every rank --------------------------------------
    set_seed(cfg.train.seed)
    method = METHODS[cfg.method.name](dict(cfg.method.options))
    if world > 1 and cfg.train.sync_bn:
        if accelerator.device.type == "cuda":
            # student and teacher alike: both see per-rank slices of the same global batch
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        else:
            say("note: SyncBatchNorm needs GPUs; BatchNorm statistics stay per process on CPU")
    set_seed(cfg.train.seed + rank)  # ranks differ from here on (e.g. drop-path masks)

    loader = build_loader(cfg.data, rank=rank, world_size=world, device=accelerator.device)
    plan = make_plan(cfg, len(loader), world)
    optimizer = build_optimizer(cfg.optim, method, plan.peak_lr)
    model, optimizer = accelerator.prepare(method, optimizer)
    core = accelerator.unwrap_model(model)

    def momentum_at(step: int) -> float:
        if hasattr(core, "teacher_momentum"):
            return float(core.teacher_momentum(step, plan.total_steps))
        return teacher_momentum(step, plan.total_steps, DEFAULT_TEACHER_MOMENTUM)

    def wd_at(step: int) -> float:
        o = cfg.optim
        return o.weight_decay if o.weight_decay_end is None else cosine(step, plan.total_steps, o.weight_decay, o.weight_decay_end)

    # --- resume ----------------------------------------------------------------------------------
    step, epoch, batch_in_epoch = 0, 0, 0
    pending_rng: dict | None = None
    mid_epoch = False
    ckpt_path = resolve_resume(resume, ckpt_dir) if resume else None
    if resume == "auto" and ckpt_path is None:
        say(f"--resume auto: no checkpoint in {ckpt_dir}, starting from scratch")
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        ranks = state["ranks"]
        if len(ranks) != world:
            warnings.warn(f"checkpoint from {len(ranks)} processes resumed on {world}: data order and RNG "
                          "streams continue approximately, not exactly", stacklevel=1)
        mine = ranks[rank % len(ranks)]
        pending_rng = mine["rng"]
        # Always restore the data position: a reader with its own state (DALI) continues its stream
        # from there; at an epoch's end set_epoch() below then moves every backend to the next one.
        loader.load_state_dict(mine["loader"])
        if batch_in_epoch >= plan.batches_per_epoch // cfg.train.grad_accum * cfg.train.grad_accum:
            epoch, batch_in_epoch = epoch + 1, 0  # saved at the end of an epoch: start the next afresh
        else:
            mid_epoch = True
        now = flat_items(config_to_dict(cfg))
        changed = {k: (v, now.get(k)) for k, v in flat_items(state["config"]).items() if now.get(k) != v}
        say(f"resumed from {ckpt_path} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
        if changed:
            say("config differs from the checkpoint's: " + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))

    # --- output, logging ----------------------------------------------------------------------
    if accelerator.is_main_process:
        config_path = save_config(cfg, ckpt_dir / "config.yaml")
    else:
        config_path = ckpt_dir / "config.yaml"
    if use_tb:
        accelerator.init_trackers("densessl", config=_tracker_config(cfg))
    max_steps = plan.total_steps if cfg.train.max_steps is None else min(cfg.train.max_steps, plan.total_steps)
    logger = RunLogger(accelerator, out_dir, max_steps, step, cfg.log.progress, use_tb)
    logger.event(event="resume" if ckpt_path else "start", step=step, checkpoint=str(ckpt_path) if ckpt_path else None,
                 processes=world, device=str(accelerator.device), steps_per_epoch=plan.steps_per_epoch,
                 total_steps=plan.total_steps, peak_lr=plan.peak_lr)
    say(f"{cfg.method.name}: {world} process(es) on {accelerator.device}, {plan.steps_per_epoch} steps/epoch x "
        f"{cfg.train.epochs} epochs = {plan.total_steps} steps (stop at {max_steps}), global batch "
        f"{plan.images_per_micro * cfg.train.grad_accum}, peak lr {plan.peak_lr:.4g}")

    last_saved: Path | None = ckpt_path
    last_saved_step = step if ckpt_path else -1

    def save(step: int, epoch: int, batch_in_epoch: int) -> Path | None:
        """Collective: every rank contributes its RNG and data position; the main process writes."""
        mine = {"rank": rank, "step": step, "batch_in_epoch": batch_in_epoch, "rng": rng_state(),
                "loader": loader.state_dict(), "param_digest": parameter_digest(core) if world > 1 else None}
        ranks = gather_object([mine]) if world > 1 else [mine]
        path = None
        if accelerator.is_main_process:
            digests = {r["param_digest"] for r in ranks}
            if len(digests) > 1:
                warnings.warn(f"step {step}: weights differ between ranks ({len(digests)} distinct digests)", stacklevel=1)
            state = {
                "format": 1, "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "config": config_to_dict(cfg), "ranks": ranks, "world_size": world,
            }
            path = save_checkpoint(state, ckpt_dir, step, cfg.checkpoint.keep_last)
            save_config(cfg, ckpt_dir / "config.yaml")
            logger.event(event="checkpoint", step=step, path=str(path))
        accelerator.wait_for_everyone()
        return path

    # --- the loop --------------------------------------------------------------------------------
    accum = cfg.train.grad_accum
    limit = plan.steps_per_epoch * accum  # micro-batches used per epoch (a remainder < accum is left)
    meter = StepMeter()
    step_terms: dict[str, torch.Tensor] = {}
    clip = cfg.optim.clip_grad_norm is not None or cfg.optim.clip_grad_per_param is not None
    started = time.perf_counter()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    while step < max_steps and epoch < cfg.train.epochs:
        if not mid_epoch:
            if pending_rng is not None:  # state as it was right before this epoch's iter() in the first run
                set_rng_state(pending_rng)
                pending_rng = None
            loader.set_epoch(epoch)
            batch_in_epoch = 0
        batches = iter(loader)
        if pending_rng is not None:  # mid-epoch: the first run's iter() happened before the checkpoint
            set_rng_state(pending_rng)
            pending_rng = None
        mid_epoch = False
        while batch_in_epoch < limit and step < max_steps:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                raise RuntimeError(
                    f"rank {rank}: the loader ended after {batch_in_epoch} batches of epoch {epoch}, "
                    f"but its len() promised {plan.batches_per_epoch}"
                ) from None
            meter.data_time += time.perf_counter() - t0
            micro = batch_in_epoch % accum
            if micro == 0:
                core.update_teacher(momentum_at(step))
            sync = micro == accum - 1
            with nullcontext() if sync or world == 1 else accelerator.no_sync(model):
                out = model(batch)
                accelerator.backward(out["loss"] / accum if accum > 1 else out["loss"])
            for k, v in _scalar_terms(out).items():
                v = v.float() / accum
                step_terms[k] = step_terms[k] + v if k in step_terms else v
            batch_in_epoch += 1
            meter.micro_batches += 1
            if not sync:
                continue

            lr, wd = plan.lr(step), wd_at(step)
            set_lr_wd(optimizer, lr, wd)
            if clip:
                accelerator.unscale_gradients(optimizer)
                grads = grads_of(optimizer)
                if cfg.optim.clip_grad_per_param is not None:
                    clip_per_parameter_(grads, cfg.optim.clip_grad_per_param)
                if cfg.optim.clip_grad_norm is not None:
                    step_terms["grad_norm"] = clip_global_(grads, cfg.optim.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            meter.add_terms(step_terms)
            step_terms = {}
            logger.step_done()

            last = step >= max_steps or (epoch == cfg.train.epochs - 1 and batch_in_epoch >= limit)
            if step % cfg.log.every_steps == 0 or last:
                data_stats = getattr(loader, "stats", {})
                logger.log(meter, step, epoch, {"lr": lr, "wd": wd, "momentum": momentum_at(step - 1)},
                           plan.images_per_micro, int(data_stats.get("bad_samples", 0)),
                           int(data_stats.get("recovered_samples", 0)))
            if step % cfg.checkpoint.every_steps == 0 or last:
                t_save = time.perf_counter()
                last_saved, last_saved_step = save(step, epoch, batch_in_epoch), step
                meter.start += time.perf_counter() - t_save  # checkpoint time is not training throughput
        if batch_in_epoch >= limit:
            epoch += 1
        if hasattr(batches, "close"):
            batches.close()  # stop this iteration's workers now (max_steps reached mid-epoch)

    if step != last_saved_step:  # e.g. the run was already complete when resumed
        last_saved = save(step, epoch, batch_in_epoch) or last_saved
    exported: dict[str, Path] = {}
    if accelerator.is_main_process and cfg.checkpoint.export:
        from train.export import export_backbone

        exported = export_backbone(core.student_backbone(), out_dir / "exported")
    logger.event(event="end", step=step, seconds=time.perf_counter() - started,
                 exported={k: str(v) for k, v in exported.items()})
    logger.close()
    accelerator.wait_for_everyone()
    if use_tb:
        accelerator.end_training()
    if last_saved is None:
        found = sorted(ckpt_dir.glob("ckpt-*.pt"))
        last_saved = found[-1] if found else None
    result = RunResult(step, last_saved, config_path, out_dir / "log.jsonl",
                       out_dir / "tensorboard" if use_tb else None, exported)
    if accelerator.is_main_process:
        print(f"\ndone: step {step}/{plan.total_steps} in {time.perf_counter() - started:.0f} s; {logger.summary()}")
        print(f"  checkpoint  {result.checkpoint}")
        print(f"  config      {result.config}")
        print(f"  log         {result.log}" + (f"   (TensorBoard: tensorboard --logdir {result.tensorboard})" if use_tb else ""))
        for kind, p in exported.items():
            print(f"  exported    {p}   [{kind}]")
    return result
