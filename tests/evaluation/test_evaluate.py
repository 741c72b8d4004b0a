"""``python -m evaluation`` end to end on a tiny copy-paste set, the leakage check, and
checkpoints through the method contract's export."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import torch
import torchvision

from evaluation.data import load_split
from evaluation.evaluate import EvalSettings, main
from evaluation.leakage import check_leakage, evaluation_hashes
from evaluation.models import expand_spec
from evaluation.segmentation import foreground_iou, probe_stats
from shards.content_hashes import file_hash
from shards.convert import ConvertOptions, convert
from shards.copy_paste import build
from shards.folder import scan_photos
from shards.photos import TUXPAINT_STAMPS, available_photos
from train.checkpoint import save_checkpoint

OPTS = ConvertOptions(workers=1, progress=False)


def _smallest(pool: str, n: int, jpegs: list[Path]) -> list[Path]:
    in_pool = set(available_photos(pool=pool))
    return sorted((p for p in jpegs if p in in_pool), key=lambda p: (p.stat().st_size, p.name))[:n]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, real_jpegs) -> Path:
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    out = tmp_path_factory.mktemp("copy-paste")
    photos = _smallest("pretrain", 6, real_jpegs) + _smallest("eval", 3, real_jpegs)
    build(out, train=8, test=6, size=64, seed=0, options=OPTS, photos=photos)
    return out


def test_eval_data_reads_masks_labels_backgrounds_and_hashes(tiny_set):
    split = load_split(tiny_set, "test")
    assert split.images.shape == (6, 3, 64, 64) and split.images.dtype == torch.uint8
    assert split.masks.shape == (6, 64, 64) and int(split.masks.min()) >= 0
    for mask, label in zip(split.masks, split.labels):  # label = category of the largest object
        counts = torch.bincount(mask.reshape(-1))
        assert label != 0 and counts[label] == counts[1:].max()
    eval_pool = {str(p) for p in available_photos(pool="eval")}
    assert set(split.backgrounds) <= eval_pool  # test backgrounds: the evaluation pool only
    clusters, photos = split.clusters()
    assert [photos[c] for c in clusters] == split.backgrounds
    stored = {}
    for tar in sorted(tiny_set.glob("test-*.tar")):
        with tarfile.open(tar) as tf:
            stored.update({m.name.split(".")[0]: tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")})
    assert split.hashes == [hashlib.blake2b(stored[k], digest_size=16).hexdigest() for k in split.keys]


def test_leakage_flags_a_run_trained_on_the_evaluation_photos(tmp_path, real_jpegs):
    eval_photos, pretrain_photos = _smallest("eval", 3, real_jpegs), _smallest("pretrain", 3, real_jpegs)
    convert(scan_photos(eval_photos), tmp_path / "leaky", OPTS)
    convert(scan_photos(pretrain_photos), tmp_path / "clean", OPTS)
    evaluation = evaluation_hashes(["not-a-stored-image"], [], eval_photos)
    assert evaluation == {"not-a-stored-image"} | {file_hash(p) for p in eval_photos}
    leaky = check_leakage(evaluation, str(tmp_path / "leaky"))
    assert (leaky.checked, leaky.seen, leaky.cell()) == (4, 3, "3 SEEN")
    clean = check_leakage(evaluation, str(tmp_path / "clean" / "train-*.tar"))
    assert (clean.seen, clean.cell()) == (0, "0")
    (tmp_path / "clean" / "hashes.txt").unlink()
    unknown = check_leakage(evaluation, str(tmp_path / "clean"))
    assert unknown.seen is None and unknown.cell() == "?" and "convert it again" in unknown.reason


def _tiny_run(tmp_path: Path, shards: str) -> Path:
    """A run directory with one CLoVE checkpoint whose config says it trained on ``shards``."""
    from model.registry import METHODS
    from train.config import config_to_dict, load_config

    overrides = ["method.options.backbone=resnet18", "method.options.proj_hidden=64", "method.options.proj_dim=32"]
    cfg = load_config(None, overrides + [f"data.shards={shards}", "data.samples_per_epoch=64"])
    torch.manual_seed(0)
    method = METHODS["clove"](cfg.method.options)
    save_checkpoint({"config": config_to_dict(cfg), "model": method.state_dict(), "step": 5}, tmp_path / "run" / "checkpoints", 5)
    return tmp_path / "run"


def test_evaluate_end_to_end(tiny_set, tmp_path, capsys, real_jpegs):
    # a run that pretrained on the very photos the correspondence metric uses
    leaky_shards = tmp_path / "leaky"
    convert(scan_photos(available_photos(pool="eval")[:4]), leaky_shards, OPTS)
    run = _tiny_run(tmp_path, str(leaky_shards))
    export = tmp_path / "export"
    export.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), export / "resnet18_torchvision.pth")
    meta = {"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth", "method": "clove"}
    (export / "backbone.json").write_text(json.dumps(meta))
    out = tmp_path / "eval.jsonl"
    threads = torch.get_num_threads()
    args = ["--data", str(tiny_set), "--quick", "--no-progress", "--threads", "1", "--out", str(out), "--bn", "both"]
    try:
        rc = main(
            ["--checkpoint", "random:resnet18", "--seeds", "2", "--checkpoint", f"E={export}", "--checkpoint", f"R={run}"] + args
        )
    finally:
        torch.set_num_threads(threads)  # --threads sets the process-wide count
    assert rc == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == [
        "random:resnet18 (2 seeds)",
        "random:resnet18 (2 seeds) [BN re-estimated]",
        "E",
        "E [BN re-estimated]",
        "R",
        "R [BN re-estimated]",
    ]
    assert [i["seed"] for i in rows[0]["info"]] == [0, 1]  # two init seeds in one row
    assert rows[0]["replicates"]["fg/layer3"] == 4 and rows[0]["replicates"]["corr/layer3"] == 2  # x 2 probe seeds
    assert rows[1]["info"][0]["bn"] == "re-estimated on the train split (8 images)"
    assert rows[0]["figures"] != rows[1]["figures"]  # a random network's statistics are not its images'
    keys = {f"{m}/{layer}" for m in ("fg", "bf", "knn", "corr") for layer in ("layer3", "layer4")}
    for row in rows:
        assert set(row["figures"]) == set(row["sd"]) == keys
        assert all(0 <= v <= 1 for v in row["figures"].values())
        assert set(row["no_information"]) == keys | {"chance/layer3", "chance/layer4"}
        assert json.dumps(row, sort_keys=True) in printed  # the same JSON line on stdout
    # leakage: random saw nothing, the export cannot tell, the run trained on evaluation photos
    assert [r["leakage"]["seen_in_pretraining"] for r in rows[::2]] == [0, None, 4]
    assert "4 SEEN" in printed and "no information" in printed and "chance" in printed
    # every row against the first, within its BN protocol, with an interval around the difference
    assert rows[0]["differences"] == {} and set(rows[3]["differences"]) == {"random:resnet18 (2 seeds) [BN re-estimated]"}
    for key, (d, low, high) in rows[4]["differences"]["random:resnet18 (2 seeds)"].items():
        assert low <= d <= high, key
    assert main(["--checkpoint", "random:resnet18", "--data", str(tmp_path / "nothing"), "--quick"]) == 2
    assert main(["--checkpoint", str(tmp_path / "no-such-run"), "--data", str(tiny_set)]) == 2
    assert main(["--checkpoint", "random:resnet18", "--baseline", "nope"] + args[:3]) == 2
    capsys.readouterr()
    # an --out that cannot be written fails first, in one line, before any model or data is read
    assert main(["--checkpoint", "no-such-spec", "--data", str(tmp_path / "nothing"), "--out", "/proc/densessl/e.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/proc/densessl" in err


def test_object_probe_scores_foreground_iou():
    """fg/L is the class-balanced probe's IoU of the object class: features that carry the object
    mask score 1; constant features can only say 'all object' or 'all background'."""
    gen = torch.Generator().manual_seed(0)
    masks = [torch.zeros(16, 8, 8, dtype=torch.long) for _ in range(2)]
    for m in masks:
        for i in range(16):  # one object per image, of category 1, 2 or 3, at a random place
            y, x = torch.randint(0, 5, (2,), generator=gen).tolist()
            m[i, y : y + 3, x : x + 3] = 1 + i % 3

    def carrying_mask(m):  # [N, 2, 8, 8]: object indicator and its complement, at stride 1
        fg = (m > 0).float()[:, None]
        return torch.cat([fg, 1 - fg], 1)

    s = EvalSettings(pixels_per_image=64, probe_epochs=30)
    stats = probe_stats(carrying_mask(masks[0]), masks[0], carrying_mask(masks[1]), masks[1], s.pixels_per_image, s.probe_epochs)
    assert stats.shape == (16, 7) and float(foreground_iou(stats.sum(0)[:3])) == 1.0
    constant = probe_stats(torch.ones(16, 2, 8, 8), masks[0], torch.ones(16, 2, 8, 8), masks[1], 64, 30)
    share = float((masks[1] > 0).double().mean())
    assert float(foreground_iou(constant.sum(0)[:3])) in (pytest.approx(0.0), pytest.approx(share))


@pytest.fixture
def one_thread():
    """Small models only: one intra-op thread is much faster on a CPU shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_checkpoints_of_a_run_are_rebuilt_and_exported(tmp_path, one_thread):
    from model.registry import METHODS
    from train.config import config_to_dict, load_config

    cfg = load_config(
        None,
        [
            "method.options.backbone=resnet18",
            "method.options.proj_hidden=64",
            "method.options.proj_dim=32",
            "data.samples_per_epoch=64",
        ],
    )
    methods = {}
    for step in (3, 7):
        torch.manual_seed(step)
        methods[step] = METHODS["clove"](cfg.method.options)
        save_checkpoint(
            {"config": config_to_dict(cfg), "model": methods[step].state_dict(), "step": step},
            tmp_path / "run" / "checkpoints",
            step,
        )
    specs = expand_spec(str(tmp_path / "run"), all_steps=True)
    assert [Path(label).name for label, _ in specs] == ["ckpt-00000003.pt", "ckpt-00000007.pt"]
    newest = expand_spec(str(tmp_path / "run"))
    assert len(newest) == 1 and newest[0][0].endswith("ckpt-00000007.pt")
    x = torch.randn(1, 3, 64, 64)
    for (_, build_features), step in zip(specs, (3, 7)):
        features = build_features()
        assert features.name == f"clove resnet18 step {step}" and features.info["step"] == step
        assert features.info["trained_on"] == cfg.data.shards  # what the leakage check reads
        trunk = methods[step].student.backbone.eval()
        with torch.no_grad():
            torch.testing.assert_close(features(x)["layer4"], trunk(x))  # the trained C5 map


def test_a_vit_without_batch_norm_keeps_its_row_under_bn_reestimated(tiny_set, capsys, one_thread):
    pytest.importorskip("timm")
    args = ["--checkpoint", "random:vit_tiny_patch16_224", "--bn", "reestimated", "--data", str(tiny_set), "--quick"]
    assert main(args + ["--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["model"], r["bn"]) for r in rows] == [("random:vit_tiny_patch16_224", "exported")]
    assert {k.split("/")[1] for k in rows[0]["figures"]} == {"block10", "block11", "block12"}


def test_a_set_that_records_no_backgrounds_is_named_and_clustered_by_image(tiny_set, monkeypatch, capsys):
    from evaluation import evaluate as ev

    real = ev.load_split

    def without_backgrounds(data_dir, split, limit=None):
        s = real(data_dir, split, limit)
        s.backgrounds = list(s.keys)  # what load_split gives for a set built before backgrounds were recorded
        return s

    monkeypatch.setattr(ev, "load_split", without_backgrounds)
    data = ev.load_data(tiny_set, EvalSettings.quick())
    assert "records no background photos" in capsys.readouterr().err
    assert len(data.test.clusters()[1]) == len(data.test.keys)


def test_random_config_row_is_the_configs_method_at_its_own_init():
    """random:CONFIG.yaml builds the config's method (here the 4-block patch-8 ViT of gtsa_tiny, which
    no timm name describes) from the seed: the same seed gives the student's init weights, another
    seed other weights, and the caller's RNG is untouched."""
    pytest.importorskip("timm")
    from model.registry import METHODS
    from train.config import load_config

    config = str(Path(__file__).resolve().parents[2] / "configs" / "gtsa_tiny.yaml")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    [(label, build)] = expand_spec(f"random:{config}", seed=4)
    features = build()
    assert torch.equal(torch.get_rng_state(), before)
    assert label == f"random:{config}" and features.info["init"] == "default" and features.info["seed"] == 4
    assert "method" not in features.info and "step" not in features.info  # the leakage check: saw nothing
    assert features.strides == {"block2": 8, "block3": 8, "block4": 8}
    torch.manual_seed(4)
    student = METHODS["gtsa"](dict(load_config(config).method.options)).student.encoder.vit.state_dict()
    exported = features.body.vit.state_dict()
    assert exported.keys() == student.keys() and all(torch.equal(exported[k], student[k]) for k in student)
    other = expand_spec(f"random:{config}", seed=5)[0][1]().body.vit.state_dict()
    assert not torch.equal(other["blocks.0.attn.qkv.weight"], exported["blocks.0.attn.qkv.weight"])
    with pytest.raises(ValueError, match="own init"):
        expand_spec(f"random-zero:{config}")
    with pytest.raises(FileNotFoundError, match="no config file"):
        expand_spec("random:nope.yaml")
