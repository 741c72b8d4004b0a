"""What the GPU check runs: one list of steps, at GPU sizes or (``--dry-run``) tiny CPU sizes.

The dry run is the same plan, in the same order, with the same entry points and flags; only
sizes, the device and the decoder differ (``--decode cpu`` where nvJPEG needs CUDA; DALI runs
CPU-only). Steps come in priority order: what the goals need first, so a short window still
measures them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Data:
    """The benchmark shards and the loaders that read them (loader bench, training, M timing)."""

    images: int  # JPEGs made from the photos for the shards
    shard_size: str
    workers: int  # loader workers (and shard writers)
    decode: str  # torch backend decoder


@dataclass(frozen=True)
class Bench:
    """``pipeline.bench``: the loader benchmarks."""

    batch: int
    steps: int
    warmup: int


@dataclass(frozen=True)
class Train:
    """``python -m train``: the short training runs (whose batch the M timing shares)."""

    config: str
    batch: int
    steps: int
    log_every: int
    overrides: tuple[str, ...] = ()  # extra config overrides (view sizes, widths)


@dataclass(frozen=True)
class Model:
    """``model.bench``: the model steps on synthetic inputs."""

    backbone: str
    batch: int
    flags: tuple[str, ...]  # size/length flags (kept only where --help lists them)
    clove_flags: tuple[str, ...] = ()  # CLoVE-only size flags
    views: str = "2×224 + 6×96"


@dataclass(frozen=True)
class Geometry:
    """``gpucheck.geometry_share``: the M timing."""

    reps: int = 50
    flags: tuple[str, ...] = ()  # view size flags


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between a GPU run and the dry run, by the step it serves."""

    device: str
    data: Data
    bench: Bench
    train: Train
    model: Model
    geometry: Geometry = Geometry()
    cap_scale: float = 1.0  # the dry run's CPU steps are slow and this machine is shared: longer caps


GPU = Sizes(
    device="cuda",
    data=Data(images=1000, shard_size="10MB", workers=14, decode="gpu"),
    bench=Bench(batch=256, steps=30, warmup=5),
    train=Train(config="configs/clove_r50_imagenet.yaml", batch=128, steps=100, log_every=10),
    model=Model(backbone="resnet50", batch=128, flags=("--steps", "10", "--warmup", "3", "--rounds", "1")),
)
DRY = Sizes(
    device="cpu",
    data=Data(images=24, shard_size="1MB", workers=1, decode="cpu"),
    bench=Bench(batch=4, steps=2, warmup=1),
    train=Train(
        config="configs/default.yaml",
        batch=4,
        steps=3,
        log_every=1,
        overrides=(
            "data.global_size=64",
            "data.local_size=32",
            "data.num_local=2",
            "method.options.proj_hidden=64",
            "data.shuffle_buffer=8",
        ),
    ),
    model=Model(
        backbone="resnet18",
        batch=2,
        flags=("--steps", "1", "--warmup", "1", "--rounds", "1", "--global-size", "64", "--local-size", "32"),
        clove_flags=("--num-local", "2", "--proj-hidden", "64"),
        views="2×64 + 2×32",
    ),
    geometry=Geometry(reps=3, flags=("--global-size", "64", "--local-size", "32", "--num-local", "2")),
    cap_scale=5.0,
)


@dataclass
class Step:
    """One subprocess of the plan and how its output becomes figures."""

    name: str  # figure id (prefix of the figures it yields)
    what: str  # the README table's "what"
    readme_cmd: str  # the README table's "command (above)"
    argv: list[str]
    cap_s: float  # time cap on the GPU machine (the dry run scales it)
    kind: str  # shards | pytest | bench | model | train | geometry
    needs: list[str] = field(default_factory=list)  # modules that must import
    output: Path | None = None  # JSON-lines file the entry point writes
    batch: int = 0
    blocked: str = ""  # set by the runner when a prerequisite (the shards) failed


def bench_step(
    py: list[str], sz: Sizes, shards: Path, out: Path, backend: str, recipe: str, with_m: bool, vs_reference: bool = False
) -> Step:
    """A ``pipeline.bench`` run of ``backend`` with ``recipe`` (and M, or against the reference)."""
    name = f"bench.{backend}.{recipe}" + (".m" if with_m else "")
    json_out = out / "bench" / f"{name}.jsonl"
    argv = [*py, "-m", "pipeline.bench", "--shards", str(shards), "--backend", backend, "--recipe", recipe]
    argv += ["--batch-size", str(sz.bench.batch), "--steps", str(sz.bench.steps), "--warmup", str(sz.bench.warmup)]
    argv += ["--workers", str(sz.data.workers), "--device", sz.device, "--json-out", str(json_out)]
    if backend == "torch":
        argv += ["--decode", sz.data.decode]
    argv += ["--with-m"] if with_m else []
    argv += ["--vs", "reference"] if vs_reference else []
    views = {"clove": "2×224 + 6×96", "two-view": "2×224", "gtsa": "2×224 + 8×96"}[recipe]
    what = (
        f"`{backend}` backend"
        + (f" (decode {sz.data.decode})" if backend == "torch" else "")
        + f", {recipe} recipe ({views}), full photometrics"
        + (", matrices and M on the device" if with_m else "")
        + f", batch {sz.bench.batch}"
        + (", vs reference (PIL, public-code style)" if vs_reference else "")
    )
    cmd = (
        f"`pipeline.bench --backend {backend} --recipe {recipe} --batch-size {sz.bench.batch}"
        + (f" --decode {sz.data.decode}" if backend == "torch" else "")
        + (" --with-m" if with_m else "")
        + (" --vs reference" if vs_reference else "")
        + "`"
    )
    needs = ["nvidia.dali"] if backend == "dali" else []
    return Step(name, what, cmd, argv, 90 if vs_reference else 60, "bench", needs, json_out, sz.bench.batch)


def train_step(py: list[str], sz: Sizes, shards: Path, out: Path, backend: str) -> Step:
    """A short ``python -m train`` run of CLoVE on the ``backend`` loader; its figures come from ``log.jsonl``."""
    run_dir = out / f"train-{backend}"
    argv = [
        *py,
        "-m",
        "train",
        "--config",
        sz.train.config,
        f"output_dir={run_dir}",
        f"data.shards={shards}",
        f"data.backend={backend}",
        f"data.batch_size={sz.train.batch}",
        f"data.num_workers={sz.data.workers}",
        f"data.samples_per_epoch={sz.train.batch * (sz.train.steps + 1)}",
        f"train.max_steps={sz.train.steps}",
        "train.epochs=1",
        f"log.every_steps={sz.train.log_every}",
        "log.tensorboard=false",
        "log.progress=false",
        "checkpoint.every_steps=1000000",
        "checkpoint.keep_last=1",
        "checkpoint.export=false",
        *sz.train.overrides,
    ]
    if backend == "torch":
        argv.append(f"data.decode={sz.data.decode}")
    if sz.device == "cpu":
        argv.append("train.cpu=true")
    what = (
        f"CLoVE training loop, {sz.train.steps} steps, `{backend}` backend, batch {sz.train.batch}, "
        f"`{Path(sz.train.config).name}`"
    )
    cmd = f"`python -m train --config {sz.train.config} data.backend={backend} train.max_steps={sz.train.steps}`"
    needs = ["nvidia.dali"] if backend == "dali" else []
    return Step(f"train.{backend}", what, cmd, argv, 150, "train", needs, run_dir / "log.jsonl", sz.train.batch)


def supported(args: list[str], flags: set[str]) -> list[str]:
    """``args`` without the options (and their values) that ``flags`` (from ``--help``) lacks."""
    out: list[str] = []
    i = 0
    while i < len(args):
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        item = args[i : i + 2] if takes_value else args[i : i + 1]
        if args[i] in flags:
            out += item
        i += len(item)
    return out


def build_plan(py: list[str], sz: Sizes, out: Path, shards: Path, model_flags: set[str], root: Path) -> list[Step]:
    """The whole check in priority order. ``model_flags``: the flags ``model.bench --help`` lists
    (GTSA joins the plan once it has ``--method``). Shard building comes first (see runner)."""
    bench = [bench_step(py, sz, shards, out, "dali", "clove", True), bench_step(py, sz, shards, out, "torch", "clove", True)]
    model_common = ["--device", sz.device, "--bf16", "--batch-size", str(sz.model.batch)]
    clove_args = [
        "--backbone",
        sz.model.backbone,
        "--channels-last",
        *sz.model.flags,
        "--variants",
        "batched",
        *sz.model.clove_flags,
    ]
    model_argv = [*py, "-m", "model.bench", *supported(model_common + clove_args, model_flags)]
    steps = [
        Step(
            "pytest.gpu",
            "`pytest -m gpu` (nvJPEG, device resampling, DALI `mixed` geometry tests)",
            "`pytest -m gpu`",
            [
                *py,
                "-m",
                "pytest",
                "-o",
                "addopts=",
                "-m",
                "gpu",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={out / 'pytest-gpu.xml'}",
                str(root / "tests"),
            ],
            120,
            "pytest",
            output=out / "pytest-gpu.xml",
        ),
        *bench,
        Step(
            "model.clove_r50",
            f"CLoVE step, {sz.model.backbone}, bf16, channels-last, {sz.model.views}, batch {sz.model.batch}, synthetic inputs",
            f"`python -m model.bench {' '.join(model_common)} --backbone {sz.model.backbone} --channels-last`",
            model_argv,
            150,
            "model",
            batch=sz.model.batch,
        ),
        train_step(py, sz, shards, out, "torch"),
        Step(
            "geometry.clove",
            f"CLoVE's M + inverse maps per training step, batch {sz.train.batch}, on loader batches",
            "`python -m gpucheck.geometry_share`",
            [
                *py,
                "-m",
                "gpucheck.geometry_share",
                "--shards",
                str(shards),
                "--backend",
                "torch",
                "--device",
                sz.device,
                "--batch-size",
                str(sz.train.batch),
                "--workers",
                str(sz.data.workers),
                "--reps",
                str(sz.geometry.reps),
                "--json-out",
                str(out / "geometry.jsonl"),
                *sz.geometry.flags,
            ],
            60,
            "geometry",
            output=out / "geometry.jsonl",
            batch=sz.train.batch,
        ),
        train_step(py, sz, shards, out, "dali"),
        bench_step(py, sz, shards, out, "torch", "clove", False, vs_reference=True),
        bench_step(py, sz, shards, out, "dali", "clove", False),
        bench_step(py, sz, shards, out, "dali", "two-view", True),
        bench_step(py, sz, shards, out, "torch", "two-view", True),
        bench_step(py, sz, shards, out, "dali", "two-view", False),
        bench_step(py, sz, shards, out, "torch", "two-view", False),
    ]
    if "--method" in model_flags:
        steps.append(
            Step(
                "model.gtsa_vits16",
                "GTSA step, ViT-S/16, bf16, 2×224 + 8×96, synthetic inputs",
                "`python -m model.bench --method gtsa --bf16`",
                [*py, "-m", "model.bench", "--method", "gtsa", *supported(model_common + list(sz.model.flags), model_flags)],
                150,
                "model",
                batch=sz.model.batch,
            )
        )
    for s in steps:
        s.cap_s *= sz.cap_scale
    return steps
