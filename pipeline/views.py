"""View recipes and the one sampler of view geometry that every backend shares.

A recipe is N global + M local :class:`ViewSpec`, built from the recipe's augmentation values
(:data:`RECIPES`, docs/methods.md's numbers) with the config's ``data.augment`` overrides on top
(:func:`recipe_from_config`, used by every backend and the benchmark). The sampler draws, per image, each view's crop
window (random-resized-crop with torchvision's 10 attempts and centre fallback), horizontal flip
and quarter turns, plus GTSA's overlap rule, and turns them into the view's 3x3 matrix
(:mod:`pipeline.geometry`). Backends differ only in how they produce the pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pipeline.config import AugmentConfig, LoaderConfig
from pipeline.geometry import crop_resize_matrix, hflip_matrix, rot90_matrix


@dataclass(frozen=True)
class Photometric:
    """Per-view photometric augmentation (SimCLR/BYOL family). Probabilities in [0, 1]."""

    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


@dataclass(frozen=True)
class ViewSpec:
    """One view of a recipe: output size, crop law, flip/rotation, photometric part."""

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    rotate: bool = False  # uniform quarter turn, counter-clockwise
    interpolation: str = "bilinear"  # or "bicubic"
    photometric: Photometric | None = field(default_factory=Photometric)
    is_global: bool = True


@dataclass(frozen=True)
class Recipe:
    """Views of one image: globals first, then locals.

    ``min_overlap_global``/``min_overlap_local``: a view is re-drawn until its window overlaps every
    global window drawn before it by more than this share of the image area (GTSA: 0.02 / 0.01).
    """

    name: str
    views: tuple[ViewSpec, ...]
    min_overlap_global: float = 0.0
    min_overlap_local: float = 0.0

    @property
    def sizes(self) -> list[int]:
        """Side ``S`` of every view, in view order."""
        return [v.size for v in self.views]

    @property
    def num_global(self) -> int:
        """How many views are global (they come first)."""
        return sum(v.is_global for v in self.views)

    def without_photometric(self) -> Recipe:
        """The same recipe with photometric augmentation off in every view."""
        return replace(self, views=tuple(replace(v, photometric=None) for v in self.views))


# The SimCLR/BYOL crop and colour augmentation every recipe starts from; each recipe below changes
# only what docs/methods.md gives differently. Every value can be overridden from the config
# (``data.augment``, :class:`pipeline.config.AugmentConfig`). Probabilities are one number for every
# view or (first global view, other global views, local views).
STANDARD_AUGMENT = AugmentConfig(
    global_scale=(0.2, 1.0),
    local_scale=(0.2, 1.0),
    ratio=(3 / 4, 4 / 3),
    interpolation="bilinear",
    flip_p=0.5,
    rotate=False,
    jitter=(0.4, 0.4, 0.2, 0.1),
    jitter_p=0.8,
    gray_p=0.2,
    blur_p=0.0,
    blur_sigma=(0.1, 2.0),
    solarize_p=0.0,
    min_overlap=(0.0, 0.0),
)


@dataclass(frozen=True)
class RecipeRecord:
    """A named recipe: its augmentation values (docs/methods.md's numbers), default local-view count,
    and the feature stride of the backbone its method reads (ResNet C5: 32, ViT-S/16: 16), at which
    the pictures draw the matched cells M (a recipe property so that ``pipeline/`` needs nothing
    from ``model/``)."""

    augment: AugmentConfig
    num_local: int
    feature_stride: int


# The one registration of every recipe (``data.recipe`` accepts these names): a new recipe is one line here.
RECIPES: dict[str, RecipeRecord] = {
    # BYOL's asymmetric blur and solarisation on the globals, multi-crop locals
    "clove": RecipeRecord(
        replace(
            STANDARD_AUGMENT, local_scale=(0.08, 0.3), interpolation="bicubic", blur_p=(1.0, 0.1, 0.5), solarize_p=(0.0, 0.2, 0.0)
        ),
        num_local=6,
        feature_stride=32,
    ),
    # quarter turns instead of flips, stronger colour, and views that must overlap
    "gtsa": RecipeRecord(
        replace(
            STANDARD_AUGMENT,
            global_scale=(0.3, 1.0),
            local_scale=(0.1, 0.3),
            flip_p=0.0,
            rotate=True,
            jitter=(0.8, 0.8, 0.8, 0.2),
            blur_p=0.2,
            min_overlap=(0.02, 0.01),
        ),
        num_local=8,
        feature_stride=16,
    ),
    # geometry only: the loader-throughput baseline (probabilities 0: no photometric stage at all)
    "two-view": RecipeRecord(replace(STANDARD_AUGMENT, jitter_p=0.0, gray_p=0.0), num_local=0, feature_stride=32),
}
NUM_GLOBAL = 2


def resolve_augment(name: str, overrides: AugmentConfig | None = None) -> AugmentConfig:
    """Recipe ``name``'s augmentation with the non-null fields of ``overrides`` on top."""
    check_recipe_name(name)
    changes = {} if overrides is None else {k: v for k, v in asdict(overrides).items() if v is not None}
    return replace(RECIPES[name].augment, **changes)


def check_recipe_name(name: str) -> None:
    """ValueError naming the registered recipes unless ``name`` is one."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")


def _per_view(value: float | tuple[float, float, float], kind: int) -> float:
    """A probability for view kind 0 (first global), 1 (other globals) or 2 (locals)."""
    return float(value[kind]) if isinstance(value, tuple) else float(value)


def recipe_from_augment(
    name: str, aug: AugmentConfig, global_size: int, local_size: int, num_local: int, num_global: int = NUM_GLOBAL
) -> Recipe:
    """The views of a recipe from its complete augmentation ``aug`` (no null field)."""
    missing = [k for k, v in asdict(aug).items() if v is None]
    if missing:
        raise ValueError(f"augmentation of recipe {name!r} lacks {missing}; resolve it with resolve_augment")
    views = []
    for v in range(num_global + num_local):
        is_global = v < num_global
        kind = 0 if v == 0 else 1 if is_global else 2
        pm = Photometric(
            jitter=aug.jitter,
            jitter_p=_per_view(aug.jitter_p, kind),
            gray_p=_per_view(aug.gray_p, kind),
            blur_p=_per_view(aug.blur_p, kind),
            blur_sigma=aug.blur_sigma,
            solarize_p=_per_view(aug.solarize_p, kind),
        )
        off = pm.jitter_p == pm.gray_p == pm.blur_p == pm.solarize_p == 0
        views.append(
            ViewSpec(
                size=global_size if is_global else local_size,
                scale=aug.global_scale if is_global else aug.local_scale,
                ratio=aug.ratio,
                flip_p=_per_view(aug.flip_p, kind),
                rotate=aug.rotate,
                interpolation=aug.interpolation,
                photometric=None if off else pm,
                is_global=is_global,
            )
        )
    return Recipe(name, tuple(views), min_overlap_global=aug.min_overlap[0], min_overlap_local=aug.min_overlap[1])


def named_recipe(
    name: str, global_size: int = 224, local_size: int = 96, num_local: int | None = None, overrides: AugmentConfig | None = None
) -> Recipe:
    """Recipe ``name`` at these sizes with its own augmentation (``overrides``' non-null fields on
    top); ``num_local`` None: the recipe's default (CLoVE: 2 x 224 + 6 x 96; GTSA: 2 x 224 + 8 x 96;
    two-view: 2 x ``global_size``)."""
    aug = resolve_augment(name, overrides)
    num_local = RECIPES[name].num_local if num_local is None else num_local
    return recipe_from_augment(name, aug, global_size, local_size, num_local)


def recipe_from_config(cfg: LoaderConfig) -> Recipe:
    """The view recipe a loader config asks for: the named recipe, sizes and local count, with
    ``cfg.augment``'s overrides; photometrics stripped when ``cfg.photometric`` is off."""
    recipe = named_recipe(cfg.recipe, cfg.global_size, cfg.local_size, cfg.num_local, cfg.augment)
    return recipe if cfg.photometric else recipe.without_photometric()


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class ViewParams:
    """Geometry of every view of one image; arrays have one row per view."""

    windows: np.ndarray  # [V, 4] float64 (x0, y0, w, h) in original-image pixels, integers in value
    flips: np.ndarray  # [V] bool
    turns: np.ndarray  # [V] int64, counter-clockwise quarter turns
    matrices: np.ndarray  # [V, 3, 3] float64, original -> view


def random_resized_crop(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop window ``(x0, y0, w, h)``: 10 attempts, then a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    w, h = max(1, w), max(1, h)
    return (width - w) // 2, (height - h) // 2, w, h


def overlap_area(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection area of two windows ``(x0, y0, w, h)``."""
    dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dx, 0.0) * max(dy, 0.0)


def view_matrix(window: tuple[float, ...], size: int, flip: bool, turns: int) -> np.ndarray:
    """Original -> view: resize the window to ``size x size``, then flip, then rotate."""
    m = crop_resize_matrix(*window, size, size)
    if flip:
        m = hflip_matrix(size) @ m
    if turns % 4:
        m = rot90_matrix(turns, size, size) @ m
    return m


MAX_OVERLAP_TRIES = 100
_overlap_violations = 0  # this process's views kept after MAX_OVERLAP_TRIES draws broke the rule


def overlap_violations() -> int:
    """How many views this process kept although they break the recipe's overlap rule (monotonic).

    After :data:`MAX_OVERLAP_TRIES` draws the last window is kept (an image too elongated for the
    rule, say); the loaders count these as ``overlap_violations`` (the method may then find no
    matching cells for that pair)."""
    return _overlap_violations


def sample_views(width: int, height: int, recipe: Recipe, rng: random.Random) -> ViewParams:
    """Draw the geometry of every view of one ``width x height`` image."""
    windows, flips, turns, mats = [], [], [], []
    image_area = float(width * height)
    globals_drawn: list[tuple[int, int, int, int]] = []
    for spec in recipe.views:
        need = recipe.min_overlap_global if spec.is_global else recipe.min_overlap_local
        for _ in range(MAX_OVERLAP_TRIES):
            win = random_resized_crop(width, height, spec.scale, spec.ratio, rng)
            if need <= 0 or all(overlap_area(win, g) > need * image_area for g in globals_drawn):
                break
        else:
            global _overlap_violations
            _overlap_violations += 1
        if spec.is_global:
            globals_drawn.append(win)
        flip = spec.flip_p > 0 and rng.random() < spec.flip_p
        k = rng.randrange(4) if spec.rotate else 0
        windows.append(win)
        flips.append(flip)
        turns.append(k)
        mats.append(view_matrix(win, spec.size, flip, k))
    return ViewParams(
        windows=np.asarray(windows, dtype=np.float64),
        flips=np.asarray(flips, dtype=bool),
        turns=np.asarray(turns, dtype=np.int64),
        matrices=np.stack(mats),
    )


def student_teacher_pairs(num_global: int, num_views: int) -> list[tuple[int, int]]:
    """``(student view, teacher view)`` pairs: every teacher global view against every other view.

    Views ``0..num_global-1`` are global (the teacher sees only those). CLoVE's 2 global + 6 local
    views give 2 * (1 + 6) = 14 pairs, GTSA's 2 + 8 give 18.
    """
    return [(s, t) for t in range(num_global) for s in range(num_views) if s != t]
