"""The GPU check's plan: every command it will run is accepted by the real entry point, and the dry
run is the same plan (scripts/gpucheck/plan.py)."""

from pathlib import Path

import pytest

from gpucheck.plan import DRY, GPU, build_plan, supported

ROOT = Path(__file__).resolve().parents[2]
PY = ["python"]


@pytest.fixture(scope="module")
def model_flags():
    """The options `python -m model.bench --help` lists, read from its real parser."""
    import contextlib
    import io

    from model.bench import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["--help"])
    return {t.strip(",[]") for t in buf.getvalue().split() if t.startswith(("--", "[--"))}


def plans(model_flags, tmp_path):
    return {
        name: build_plan(PY, sz, tmp_path / name, tmp_path / "shards", model_flags, ROOT)
        for name, sz in (("gpu", GPU), ("dry", DRY))
    }


def test_every_command_parses_with_its_entry_point(model_flags, tmp_path, monkeypatch):
    from gpucheck.geometry_share import parse_args as geometry_args
    from pipeline.bench import parse_args as bench_args
    from train.__main__ import build_parser
    from train.config import load_config

    monkeypatch.chdir(ROOT)  # the runner starts every step in the repository root
    for plan in plans(model_flags, tmp_path).values():
        for step in plan:
            module, args = step.argv[2], step.argv[3:]
            if module == "pipeline.bench":
                bench_args(args)
            elif module == "train":
                a = build_parser().parse_args(args)
                load_config(a.config, a.overrides)  # refuses unknown keys
            elif module == "gpucheck.geometry_share":
                geometry_args(args)
            elif module == "model.bench":
                assert {a for a in args if a.startswith("--")} <= model_flags
            else:
                assert module == "pytest" and args[args.index("-m") + 1] == "gpu"


def test_the_gpu_plan_measures_what_the_issue_asks(model_flags, tmp_path):
    steps = {s.name: s for s in plans(model_flags, tmp_path)["gpu"]}
    for backend in ("torch", "dali"):
        for recipe in ("two-view", "clove"):
            for m in ("", ".m"):
                argv = steps[f"bench.{backend}.{recipe}{m}"].argv
                assert argv[argv.index("--batch-size") + 1] == "256" and argv[argv.index("--device") + 1] == "cuda"
                assert ("--with-m" in argv) == bool(m)
                if backend == "torch":
                    assert argv[argv.index("--decode") + 1] == "gpu"
    assert "--vs" in steps["bench.torch.clove"].argv
    clove = steps["model.clove_r50"].argv
    assert "--bf16" in clove and clove[clove.index("--backbone") + 1] == "resnet50"
    for backend in ("torch", "dali"):
        assert "train.max_steps=100" in steps[f"train.{backend}"].argv
    assert "geometry.clove" in steps and "pytest.gpu" in steps
    assert ("model.gtsa_vits16" in steps) == ("--method" in model_flags)


def test_the_dry_run_is_the_same_plan(model_flags, tmp_path):
    p = plans(model_flags, tmp_path)
    assert [s.name for s in p["gpu"]] == [s.name for s in p["dry"]]
    for g, d in zip(p["gpu"], p["dry"]):
        assert g.argv[:3] == d.argv[:3] and g.kind == d.kind and g.needs == d.needs

        def options(argv):
            return {a.split("=")[0] for a in argv if a.startswith("--")}

        assert options(g.argv) <= options(d.argv)


def test_gtsa_joins_once_model_bench_has_method(model_flags, tmp_path):
    steps = build_plan(PY, GPU, tmp_path, tmp_path / "s", model_flags | {"--method"}, ROOT)
    gtsa = next(s for s in steps if s.name == "model.gtsa_vits16")
    assert gtsa.argv[gtsa.argv.index("--method") + 1] == "gtsa" and "--backbone" not in gtsa.argv


def test_supported_drops_unknown_options_with_their_values():
    args = ["--a", "1", "--flag", "--b", "x", "--gone", "2", "--gone-flag"]
    assert supported(args, {"--a", "--flag", "--b"}) == ["--a", "1", "--flag", "--b", "x"]
