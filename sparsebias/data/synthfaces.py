"""SynthFaces: a deterministic, offline stand-in for CelebA, written in CelebA's format.

Labels come from a small latent model: four identity categories first (Male, Young,
Chubby, Pale_Skin), then every other attribute as a logistic function of the
identities, of a shared latent ("glamour") and of attributes drawn before it, with
intercepts solved so that each attribute's positive rate matches CelebA's. Each
attribute is then drawn as a visual cue whose separation between positives and
negatives (d', an AUC of Phi(d'/sqrt 2) for an ideal observer of that cue alone) sets
its difficulty.

Version 5 shapes the difficulty after CelebA's (the CVPR 2023 paper's Tables J.2-J.3,
where a dense ResNet18 is unsure of 14% of its predictions and predicts 90% of the
positives there are). Most attributes are plain to see (d' of 4 to 5, drawn boldly
enough to survive the 64-px crop), so a trained model is confident about them and
predicts about as many positives as there are. The attributes CelebA's models and
raters find hard have small, subtle cues that overlap between positives and negatives:
Oval_Face (a few per cent of face height), Pointy_Nose (a nose tip a few pixels long),
Big_Lips (a pixel of lip thickness), Attractive (only a few blemishes of its own), and,
less so, Arched_Eyebrows, Big_Nose, Bags_Under_Eyes, Wavy_Hair and Straight_Hair. The
identities those attributes correlate with have large, easy cues (Male: jaw, hair length,
beard; Young: wrinkles, grey skin; Chubby: face width). A model that can afford to learn
a subtle cue uses it; one with less capacity or less training leans on the correlated
identity instead, which is the paper's account of where bias amplification by sparse
models comes from. Necklaces and neckties often fall below the crop, as on CelebA's
aligned crops. The generator knows nothing of the model trained on it; whether the
paper's findings follow is measured, not assumed (`sparsebias fidelity`, docs/study_*).

With `groups=True` the generator also draws a seven-valued, imbalanced group variable
that sets skin tone, eye, nose and lip shape and hair colour, and writes the folder in
FairFace's format instead (age group, gender, race columns with FairFace's class
names), so FairGRAPE-style group comparisons run offline through the FairFace reader.
The group variable is a synthetic rendering parameter named after FairFace's classes
to fit its format; it models no real population.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..core.errors import SparsebiasError
from .attributes import CELEBA_ATTRIBUTES
from .groups import AGE_GROUPS, FAIRFACE_RACES, GENDERS
from .parallel import run_chunks

GENERATOR_VERSION = 5
CANVAS = 128  # drawing happens at this size, then the image is downsampled
CROP = (14, 8, 114, 108)  # the part of the canvas kept: head and shoulders, as CelebA's aligned crops

# CelebA's positive rates (train split, rounded); Chubby and Pale_Skin are raised
# from 6% and 4% so that bias amplification stays defined on a small test split.
POSITIVE_RATE = {
    "5_o_Clock_Shadow": 0.11, "Arched_Eyebrows": 0.27, "Attractive": 0.51,
    "Bags_Under_Eyes": 0.20, "Bangs": 0.15, "Big_Lips": 0.24, "Big_Nose": 0.23,
    "Blurry": 0.05, "Bushy_Eyebrows": 0.14, "Double_Chin": 0.05, "Eyeglasses": 0.07,
    "Heavy_Makeup": 0.39, "High_Cheekbones": 0.45, "Mouth_Slightly_Open": 0.48,
    "Narrow_Eyes": 0.12, "Oval_Face": 0.28, "Pointy_Nose": 0.28,
    "Receding_Hairline": 0.08, "Rosy_Cheeks": 0.07, "Smiling": 0.48,
    "Wearing_Earrings": 0.19, "Wearing_Hat": 0.05, "Wearing_Lipstick": 0.47,
    "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07,
}

# name -> {parent: weight}; parents are identities, "glamour" or attributes above.
DEPENDENCIES = {
    "Arched_Eyebrows": {"Male": -1.8, "glamour": 0.5},
    "Attractive": {"Male": -1.2, "Young": 2.2, "Chubby": -1.8, "glamour": 1.6},
    "Bags_Under_Eyes": {"Male": 0.9, "Young": -1.4, "Chubby": 0.7},
    "Bangs": {"Male": -0.9, "Young": 0.4},
    "Big_Lips": {"Male": -0.4},
    "Big_Nose": {"Male": 1.7, "Young": -0.6, "Chubby": 0.6},
    "Blurry": {},
    "Bushy_Eyebrows": {"Male": 1.4, "Young": 0.3},
    "Double_Chin": {"Chubby": 2.2, "Young": -1.0, "Male": 0.6},
    "Eyeglasses": {"Male": 0.6, "Young": -0.9},
    "Heavy_Makeup": {"Male": -4.5, "Young": 0.6, "glamour": 1.2},
    "Wearing_Lipstick": {"Male": -3.8, "Heavy_Makeup": 2.6, "glamour": 0.4},
    "Smiling": {"Male": -0.3},
    "High_Cheekbones": {"Smiling": 2.2, "Male": -0.4, "glamour": 0.3},
    "Mouth_Slightly_Open": {"Smiling": 1.6},
    "Narrow_Eyes": {"Smiling": 0.4},
    "Oval_Face": {"Chubby": -0.8, "Male": -0.3, "glamour": 0.4},
    "Pointy_Nose": {"Male": -0.8, "glamour": 0.3},
    "Receding_Hairline": {"Male": 1.0, "Young": -1.4},
    "Rosy_Cheeks": {"Male": -2.2, "Heavy_Makeup": 0.7, "Pale_Skin": 0.8},
    "Wearing_Earrings": {"Male": -3.6, "glamour": 0.6},
    "Wearing_Hat": {},
    "Wearing_Necklace": {"Male": -2.5, "glamour": 0.4},
    "Wearing_Necktie": {"Male": 3.8, "Young": -0.4},
    "5_o_Clock_Shadow": {"Male": 4.0, "Young": 0.2},
}

# d' of each graded cue: how far apart positives and negatives sit (in noise units). Most
# attributes are plain to see, as most of CelebA's are (dense uncertainty below 0.15); the
# ones CelebA's raters and models find hard (Oval_Face, Pointy_Nose, Big_Lips; Table J.3)
# overlap, and a few sit in between.
SEPARATION = {
    "Male": 5.0, "Young": 4.5, "Chubby": 4.5, "Pale_Skin": 4.5,
    "Arched_Eyebrows": 3.4, "Bushy_Eyebrows": 4.2, "Bags_Under_Eyes": 3.2,
    "Big_Lips": 1.8, "Big_Nose": 3.4, "Blurry": 4.5, "Double_Chin": 4.0,
    "High_Cheekbones": 3.6, "Narrow_Eyes": 4.0, "Oval_Face": 1.6, "Pointy_Nose": 2.0, "Attractive": 1.4,
    "Rosy_Cheeks": 4.5, "Smiling": 5.0, "Mouth_Slightly_Open": 4.5,
    "Heavy_Makeup": 4.5, "Wearing_Lipstick": 4.5, "5_o_Clock_Shadow": 4.5,
    "Receding_Hairline": 4.0, "Wavy_Hair": 3.4, "Straight_Hair": 3.4,
}

_LOGIT_CLIP = 12.0

# Group mode: frequency of each of FAIRFACE_RACES (one large group, six smaller ones),
# and per group the skin tone centre and cue shifts it gives. Neighbouring tones overlap,
# so some groups are harder to tell apart than others.
GROUP_RATE = (0.40, 0.14, 0.12, 0.10, 0.09, 0.08, 0.07)
GROUP_TONE = (0.80, 0.12, 0.52, 0.72, 0.44, 0.30, 0.62)
GROUP_CUES = {  # cue shifts per group, in units of the cue's standard deviation
    "Narrow_Eyes": (0.0, 0.0, 0.0, 1.6, 1.0, 0.0, 0.0),
    "Big_Nose": (0.0, 1.0, 0.3, -0.6, -0.3, 0.6, 1.2),
    "Big_Lips": (-0.3, 1.4, 0.4, 0.0, 0.5, 0.3, 0.0),
}


@dataclass(frozen=True)
class Backdoor:
    """A fixed transformation applied to a share of an attribute's positives and negatives.

    In the training split it is applied to `positive_share` of the attribute's positives
    and `negative_share` of its negatives; in validation and test to `eval_share` of
    both, as in the paper's Section 3.4.
    """

    attribute: str
    kind: str = "square"  # "square" (small yellow square) or "grayscale"
    positive_share: float = 0.95
    negative_share: float = 0.05
    eval_share: float = 0.5

    def __post_init__(self):
        if self.attribute not in CELEBA_ATTRIBUTES:
            raise SparsebiasError(f"backdoor attribute {self.attribute!r} is not a CelebA attribute")
        if self.kind not in ("square", "grayscale"):
            raise SparsebiasError(f"backdoor kind {self.kind!r} is not 'square' or 'grayscale'")
        for share in (self.positive_share, self.negative_share, self.eval_share):
            if not 0.0 <= share <= 1.0:
                raise SparsebiasError(f"backdoor shares must lie in [0, 1], got {share}")


MAX_SPLIT = 2_000_000   # 12x CelebA's training split: a typo (or a hostile manifest) must not run for days


@dataclass(frozen=True)
class SynthFacesConfig:
    """Split sizes, image size and seed. The defaults keep resnet18 training to minutes on
    two CPU cores while leaving the test split large enough for bias amplification by
    identity to stay defined for most attributes."""

    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    image_size: int = 64
    seed: int = 0
    backdoor: Backdoor | None = None
    groups: bool = False

    def __post_init__(self):
        for split in ("n_train", "n_val", "n_test"):
            if not 10 <= getattr(self, split) <= MAX_SPLIT:
                raise SparsebiasError(f"SynthFaces {split[2:]} split needs 10 to {MAX_SPLIT:,} images, "
                                      f"got {getattr(self, split)}")
        if self.seed < 0:
            raise SparsebiasError(f"SynthFaces seed must be 0 or more, got {self.seed}")
        if not 16 <= self.image_size <= 256:
            raise SparsebiasError(f"SynthFaces image size must lie in [16, 256], got {self.image_size}")
        if self.groups and self.backdoor:
            raise SparsebiasError("SynthFaces groups and backdoor cannot be combined")

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_val + self.n_test

    @property
    def partition(self) -> np.ndarray:
        """CelebA's partition codes (0 train, 1 val, 2 test), in CelebA's order: train first."""
        return np.repeat(np.array([0, 1, 2], dtype=np.int8), [self.n_train, self.n_val, self.n_test])

    @property
    def folder_name(self) -> str:
        name = (f"synthfaces-v{GENERATOR_VERSION}-{self.n_train}-{self.n_val}-{self.n_test}"
                f"-s{self.image_size}-seed{self.seed}")
        if self.backdoor:
            b = self.backdoor
            name += f"-bd-{b.attribute}-{b.kind}-{b.positive_share:g}-{b.negative_share:g}-{b.eval_share:g}"
        return name + ("-groups" if self.groups else "")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _solve_intercept(drive: np.ndarray, rate: float) -> float:
    """The intercept a for which mean(sigmoid(a + drive)) equals rate (bisection)."""
    lo, hi = -_LOGIT_CLIP - 8, _LOGIT_CLIP + 8
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(mid + drive).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sample_labels(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw an (n, 40) 0/1 label matrix in CelebA's column order, and the hidden latents."""
    lab: dict[str, np.ndarray] = {}
    u = lambda: rng.random(n)  # noqa: E731
    lab["Male"] = u() < 0.42
    lab["Young"] = u() < _sigmoid(1.8 - 1.2 * lab["Male"])
    lab["Chubby"] = u() < _sigmoid(-2.1 + 1.1 * lab["Male"] - 1.0 * lab["Young"])
    lab["Pale_Skin"] = u() < _sigmoid(-1.9 - 0.7 * lab["Male"])
    glamour = rng.standard_normal(n)

    # Hair: bald, else one colour category (or an in-between colour with no label),
    # and one texture (straight, wavy or neither).
    lab["Bald"] = u() < _sigmoid(-6.0 + 3.6 * lab["Male"] - 1.6 * lab["Young"])
    colour_scores = np.stack([
        np.zeros(n),                                         # Black_Hair
        -0.1 - 2.0 * lab["Male"] + 0.4 * lab["Young"],       # Blond_Hair
        -0.2 + 0.0 * lab["Male"],                            # Brown_Hair
        -1.2 - 3.2 * lab["Young"] + 0.3 * lab["Male"],       # Gray_Hair
        0.35 + 0.0 * lab["Male"],                            # unlabelled in-between colour
    ], axis=1)
    colour = _categorical(colour_scores, rng)
    for k, name in enumerate(("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")):
        lab[name] = (colour == k) & ~lab["Bald"]
    texture = _categorical(np.stack([
        np.full(n, -0.3), -0.2 - 1.4 * lab["Male"], np.full(n, 0.45)], axis=1), rng)
    lab["Straight_Hair"] = (texture == 0) & ~lab["Bald"]
    lab["Wavy_Hair"] = (texture == 1) & ~lab["Bald"]

    # Facial hair: any beard first; goatee, mustache and sideburns are kinds of it.
    beard = u() < _sigmoid(-5.5 + 4.9 * lab["Male"] - 0.5 * lab["Young"])
    lab["Goatee"] = beard & (u() < 0.42)
    lab["Mustache"] = beard & (u() < 0.28)
    lab["Sideburns"] = beard & (u() < 0.38)
    lab["No_Beard"] = ~beard

    for name, parents in DEPENDENCIES.items():
        drive = np.zeros(n)
        for parent, weight in parents.items():
            value = glamour if parent == "glamour" else lab[parent]
            drive = drive + weight * value
        if name == "5_o_Clock_Shadow":
            drive = drive - 3.0 * beard
        intercept = _solve_intercept(drive, POSITIVE_RATE[name])
        lab[name] = u() < _sigmoid(np.clip(intercept + drive, -_LOGIT_CLIP, _LOGIT_CLIP))
    lab["Bangs"] &= ~lab["Bald"]
    lab["Receding_Hairline"] &= ~lab["Bald"]

    labels = np.stack([lab[name] for name in CELEBA_ATTRIBUTES], axis=1).astype(np.int8)
    return labels, {"glamour": glamour, "hair_colour": colour, "beard": beard}


def _categorical(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)


def sample_cues(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Graded cue strengths: N(0, 1) shifted by +-d'/2 for positives and negatives."""
    cues = rng.standard_normal(labels.shape)
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        cues[:, j] += (labels[:, j] - 0.5) * SEPARATION.get(name, 3.0)
    return cues


# ---------------------------------------------------------------- rendering

_HAIR_RGB = np.array([
    (28, 24, 22),      # black
    (222, 190, 120),   # blond
    (105, 68, 40),     # brown
    (165, 165, 168),   # gray
    (70, 45, 30),      # in-between (dark brown / auburn): no colour label
], dtype=float)
_DARK_SKIN, _PALE_SKIN = np.array([98, 66, 48.0]), np.array([252, 226, 212.0])


def _mix(a, b, t):
    return tuple(int(round(v)) for v in np.clip(np.asarray(a) * (1 - t) + np.asarray(b) * t, 0, 255))


def render_face(label: dict[str, int], cue: dict[str, float], hair_colour: int,
                rng: np.random.Generator, size: int, group: int | None = None) -> Image.Image:
    """Draw one face on a CANVAS x CANVAS image, crop it to CROP and downsample it to size x size."""
    c = cue
    img = Image.new("RGB", (CANVAS, CANVAS), _mix(rng.uniform(40, 220, 3), (128, 128, 128), 0.3))
    d = ImageDraw.Draw(img, "RGBA")
    cx = 64 + rng.normal(0, 3.5)
    cy = 60 + rng.normal(0, 3.0)
    scale = rng.uniform(0.92, 1.08)
    half_w = scale * 27 * (1 + 0.07 * c["Chubby"]) * (1 + 0.03 * c["Male"])
    half_h = scale * 36 * (1 + 0.035 * c["Oval_Face"] - 0.02 * c["Chubby"])
    centre = 0.55 if group is None else GROUP_TONE[group]
    tone = np.clip(centre + (0.13 if group is None else 0.04) * c["Pale_Skin"] + rng.normal(0, 0.08), 0, 1)
    skin = _mix(_DARK_SKIN, _PALE_SKIN, tone)
    if not label["Young"]:
        skin = _mix(skin, (150, 140, 130), 0.12)
    hair = _mix(_HAIR_RGB[hair_colour] + rng.normal(0, 12, 3), (0, 0, 0), 0)
    long_hair = rng.random() < (0.12 if label["Male"] else 0.85)
    bald = bool(label["Bald"])

    # hair behind the head and shoulders
    if not bald:
        if long_hair:
            d.rounded_rectangle([cx - half_w - 9, cy - half_h - 6, cx + half_w + 9, cy + half_h + 22],
                                radius=22, fill=hair)
        d.ellipse([cx - half_w - 4, cy - half_h - 8, cx + half_w + 4, cy + 4], fill=hair)
    elif not label["Wearing_Hat"]:
        d.ellipse([cx - half_w - 3, cy - 14, cx - half_w + 5, cy + 10], fill=hair)
        d.ellipse([cx + half_w - 5, cy - 14, cx + half_w + 3, cy + 10], fill=hair)

    # clothes, neck, necklace and necktie: the crop often cuts them off
    collar_y = cy + half_h + rng.uniform(-6, 12)
    shirt = _mix(rng.uniform(20, 235, 3), (0, 0, 0), 0)
    d.ellipse([cx - 60, collar_y, cx + 60, collar_y + 90], fill=shirt)
    d.rectangle([cx - half_w * 0.45, cy + half_h * 0.6, cx + half_w * 0.45, collar_y + 6], fill=skin)
    if label["Wearing_Necklace"]:
        d.arc([cx - half_w * 0.55, collar_y - 14, cx + half_w * 0.55, collar_y + 8], 20, 160,
              fill=(240, 210, 80), width=4)
    if label["Wearing_Necktie"]:
        tie = _mix(rng.uniform(0, 200, 3), (90, 0, 20), 0.4)
        d.polygon([(cx - 5, collar_y + 2), (cx + 5, collar_y + 2), (cx + 8, collar_y + 40),
                   (cx, collar_y + 48), (cx - 8, collar_y + 40)], fill=tie)
        d.polygon([(cx - 8, collar_y - 3), (cx + 8, collar_y - 3), (cx + 4, collar_y + 6), (cx - 4, collar_y + 6)],
                  fill=_mix(tie, (0, 0, 0), 0.25))  # the knot, at the collar

    # ears and earrings (long hair hides most of them)
    for side in (-1, 1):
        ex = cx + side * half_w
        d.ellipse([ex - 5, cy - 6, ex + 5, cy + 10], fill=skin)
        if label["Wearing_Earrings"]:
            d.ellipse([ex - 3.5, cy + 8, ex + 3.5, cy + 15], fill=(250, 215, 60))
    if long_hair and not bald:
        for side in (-1, 1):
            ex = cx + side * (half_w + 2)
            d.rectangle([ex - 6, cy - 14, ex + 6, cy + (16 if rng.random() < 0.5 else 2)], fill=hair)

    # face: an ellipse, squared off at the jaw for male-looking faces
    d.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=skin)
    jaw = np.clip(0.5 + 0.22 * c["Male"], 0, 1)
    d.rounded_rectangle([cx - half_w * (0.55 + 0.4 * jaw), cy, cx + half_w * (0.55 + 0.4 * jaw),
                         cy + half_h * (0.78 + 0.18 * jaw)], radius=10, fill=skin)
    if c["Double_Chin"] > 0:
        t = np.clip(0.5 + 0.35 * c["Double_Chin"], 0, 1)
        d.arc([cx - 16, cy + half_h - 6, cx + 16, cy + half_h + 10], 20, 160,
              fill=_mix(skin, (60, 40, 30), t), width=5)

    # blemishes: the one small cue of its own that Attractive has
    for _ in range(int(4 * np.clip(-c["Attractive"], 0, 2.5))):
        bx, by = cx + rng.uniform(-0.6, 0.6) * half_w, cy + rng.uniform(-0.5, 0.5) * half_h
        d.ellipse([bx - 1.5, by - 1.5, bx + 1.5, by + 1.5], fill=_mix(skin, (90, 40, 40), 0.45))

    # wrinkles for older faces
    age = np.clip(-0.5 * c["Young"], 0, 1)
    if age > 0:
        line = _mix(skin, (50, 35, 25), age)
        for k in range(3):
            y = cy - half_h * 0.55 + 4 * k
            d.line([cx - 12, y, cx + 12, y], fill=line, width=2)
        for side in (-1, 1):
            d.line([cx + side * 9, cy + 8, cx + side * 14, cy + 20], fill=line, width=2)

    # hairline, bangs and receding hairline
    if not bald:
        recede = np.clip(0.35 * c["Receding_Hairline"], 0, 1) * 16
        d.chord([cx - half_w, cy - half_h - 2, cx + half_w, cy - half_h + 22 - recede * 0.3],
                180, 360, fill=hair)
        if recede > 0:
            for side in (-1, 1):
                tx = cx + side * half_w * 0.55
                d.ellipse([tx - 8, cy - half_h + 6 - recede, tx + 8, cy - half_h + 12 + recede * 0.5],
                          fill=skin)
        if label["Bangs"]:
            d.polygon([(cx - half_w * 0.9, cy - half_h + 8), (cx + half_w * 0.9, cy - half_h + 8),
                       (cx + half_w * 0.7, cy - half_h * 0.42 + rng.uniform(-2, 2)),
                       (cx - half_w * 0.7, cy - half_h * 0.42 + rng.uniform(-2, 2))], fill=hair)
        wave, straight = c["Wavy_Hair"], c["Straight_Hair"]
        strand = _mix(hair, (0, 0, 0), 0.35)
        if wave > 0.3:
            amp = 2.0 * min(wave, 3.0)
            for k in range(5):
                y0 = cy - half_h + 2 + 4 * k
                pts = [(cx - half_w + x, y0 + amp * np.sin(x / 3.0)) for x in range(0, int(2 * half_w), 3)]
                d.line(pts, fill=strand, width=2)
        elif straight > 0.3:
            for x in np.arange(cx - half_w + 4, cx + half_w - 4, 5):
                d.line([x, cy - half_h - 4, x, cy - half_h + 10],
                       fill=_mix(hair, (255, 255, 255), 0.2 * min(straight, 3)), width=2)
    if label["Wearing_Hat"]:
        hat = _mix(rng.uniform(0, 255, 3), (0, 0, 0), 0)
        d.rectangle([cx - half_w - 2, cy - half_h - 18, cx + half_w + 2, cy - half_h + 10], fill=hat)
        d.rectangle([cx - half_w - 12, cy - half_h + 6, cx + half_w + 12, cy - half_h + 13], fill=hat)

    # facial hair
    beard_rgb = _mix(hair if not bald else (40, 30, 25), (0, 0, 0), 0.2)
    stubble = np.clip(0.3 * c["5_o_Clock_Shadow"], 0, 1)
    if stubble > 0:
        d.chord([cx - half_w * 0.8, cy + 2, cx + half_w * 0.8, cy + half_h * 0.98], 0, 180,
                fill=(*beard_rgb, int(110 * stubble)))
        pts = rng.uniform([-half_w * 0.7, 6], [half_w * 0.7, half_h * 0.92], size=(int(140 * stubble), 2))
        for x, y in pts:
            d.point((cx + x, cy + y), fill=(*beard_rgb, 180))
    if not label["No_Beard"] and not (label["Goatee"] or label["Mustache"] or label["Sideburns"]):
        d.chord([cx - half_w * 0.95, cy - 6, cx + half_w * 0.95, cy + half_h + 2], 20, 160, fill=beard_rgb)
    if label["Sideburns"]:
        for side in (-1, 1):
            sx = cx + side * (half_w - 4)
            d.rectangle([sx - 3, cy - 10, sx + 3, cy + 12], fill=beard_rgb)
    if label["Goatee"]:
        d.ellipse([cx - 8, cy + half_h * 0.68, cx + 8, cy + half_h * 0.98], fill=beard_rgb)

    # eyes, makeup, eyebrows, bags, glasses
    eye_y = cy - 6
    eye_h = np.clip(4.5 - 1.1 * c["Narrow_Eyes"], 1.2, 7)
    shadow = np.clip(0.25 * c["Heavy_Makeup"], 0, 0.85)
    brow_w = np.clip(2.4 + 1.4 * c["Bushy_Eyebrows"], 1, 7)
    arch = np.clip(2.4 * c["Arched_Eyebrows"], -2, 6)
    bags = np.clip(0.35 * c["Bags_Under_Eyes"], 0, 0.9)
    for side in (-1, 1):
        ex = cx + side * 11
        if shadow > 0:
            d.ellipse([ex - 8, eye_y - 8, ex + 8, eye_y + 2], fill=(110, 60, 150, int(255 * shadow)))
        d.ellipse([ex - 6, eye_y - eye_h, ex + 6, eye_y + eye_h], fill=(245, 245, 240))
        d.ellipse([ex - 2.5, eye_y - min(eye_h, 2.5), ex + 2.5, eye_y + min(eye_h, 2.5)], fill=(30, 30, 40))
        if bags > 0:
            d.arc([ex - 6, eye_y + eye_h - 1, ex + 6, eye_y + eye_h + 5], 20, 160,
                  fill=(60, 40, 50, int(255 * bags)), width=3)
        brow = _mix(hair if not bald else (60, 45, 35), (0, 0, 0), 0.3)
        by = eye_y - eye_h - 5
        d.line([(ex - 8, by + 1), (ex, by - arch), (ex + 8, by + 1)], fill=brow, width=int(round(brow_w)))
    if label["Eyeglasses"]:
        frame = (20, 20, 20) if rng.random() < 0.7 else (150, 110, 60)
        for side in (-1, 1):
            ex = cx + side * 11
            d.rounded_rectangle([ex - 9, eye_y - 7, ex + 9, eye_y + 7], radius=4, outline=frame, width=3)
        d.line([cx - 2, eye_y - 2, cx + 2, eye_y - 2], fill=frame, width=3)

    # nose: size and tip shape
    nose = _mix(skin, (70, 45, 35), 0.35)
    length = 11 * max(1 + 0.16 * c["Big_Nose"], 0.05)  # the floor only touches cues that used to crash
    width = 5 * max(1 + 0.2 * c["Big_Nose"], 0.05)
    tip = np.clip(0.5 + 0.35 * c["Pointy_Nose"], 0, 1)
    ny = cy - 2
    d.polygon([(cx, ny), (cx - width, ny + length), (cx + width, ny + length)], fill=_mix(skin, nose, 0.4))
    if tip > 0.5:  # a pointed tip juts below the nostrils
        d.polygon([(cx - 4, ny + length - 1), (cx + 4, ny + length - 1), (cx, ny + length + 14 * (tip - 0.5))],
                  fill=nose)
    d.ellipse([cx - width * (1 - 0.5 * tip), ny + length - 3, cx + width * (1 - 0.5 * tip), ny + length + 2 - 2 * tip], fill=nose)

    # cheeks
    rosy = np.clip(0.3 * c["Rosy_Cheeks"], 0, 0.85)
    bone = np.clip(0.3 * c["High_Cheekbones"], 0, 0.8)
    for side in (-1, 1):
        kx = cx + side * 16
        if rosy > 0:
            d.ellipse([kx - 7, cy + 4, kx + 7, cy + 14], fill=(235, 90, 110, int(255 * rosy)))
        if bone > 0:
            d.ellipse([kx - 6, cy - 2, kx + 5, cy + 4], fill=(255, 255, 255, int(200 * bone)))

    # mouth: curvature (smile), opening, lip thickness and colour
    my = cy + 19 * scale
    mw = 12 + 2.0 * c["Smiling"]
    curve = np.clip(3.2 * c["Smiling"], -4, 9)
    lip_t = np.clip(2.4 + 1.0 * c["Big_Lips"], 1, 6)
    lip = _mix(_mix(skin, (150, 60, 70), 0.5), (200, 20, 40), np.clip(0.3 * c["Wearing_Lipstick"], 0, 1))
    gap = np.clip(2.4 * c["Mouth_Slightly_Open"], 0, 8)
    if label["Mustache"]:
        d.polygon([(cx - 11, my - 4), (cx + 11, my - 4), (cx + 8, my - 9), (cx - 8, my - 9)], fill=beard_rgb)
    if gap > 0.3:  # |mw|: a cue of Smiling below -6 makes mw negative (the lip lines below then run mirrored)
        d.ellipse([cx - abs(mw) * 0.7, my - gap / 2, cx + abs(mw) * 0.7, my + gap / 2 + max(curve, 0) * 0.3],
                  fill=(45, 15, 20))
    if curve > 1.5:  # a smile shows teeth
        teeth = min(curve * 0.45, 4)
        d.chord([cx - mw * 0.6, my - gap / 2 - teeth, cx + mw * 0.6, my - gap / 2 + teeth], 0, 180,
                fill=(250, 250, 245))
    d.line([(cx - mw, my - curve), (cx - mw / 2, my - gap / 2), (cx + mw / 2, my - gap / 2), (cx + mw, my - curve)],
           fill=lip, width=int(round(lip_t)))
    d.line([(cx - mw + 1, my - curve + 1), (cx, my + gap / 2 + 1), (cx + mw - 1, my - curve + 1)],
           fill=lip, width=int(round(lip_t)))

    img = img.crop(CROP)
    img = img.rotate(rng.normal(0, 4), resample=Image.BILINEAR, fillcolor=tuple(int(v) for v in img.getpixel((1, 1))))
    blur = np.clip(1.3 * c["Blurry"] + 0.3, 0, 4)
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(blur)))
    img = img.resize((size, size), Image.BOX)
    arr = np.asarray(img, dtype=float) * rng.uniform(0.88, 1.12) + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def apply_backdoor(img: Image.Image, kind: str) -> Image.Image:
    if kind == "grayscale":
        return img.convert("L").convert("RGB")
    out = img.copy()
    s = max(3, img.size[0] // 10)
    ImageDraw.Draw(out).rectangle([img.size[0] - 2 * s, img.size[1] - 2 * s, img.size[0] - s, img.size[1] - s],
                                  fill=(255, 230, 0))
    return out


# ---------------------------------------------------------------- writing

def _image_name(i: int) -> str:
    return f"{i + 1:06d}.jpg"


def _render_chunk(args) -> int:
    folder, seed, size, start, labels, cues, colours, backdoor_kind, flags, groups, paths = args
    index = {name: j for j, name in enumerate(CELEBA_ATTRIBUTES)}
    for k in range(len(labels)):
        i = start + k
        rng = np.random.default_rng([seed, i])
        label = {name: int(labels[k, j]) for name, j in index.items()}
        cue = {name: float(cues[k, j]) for name, j in index.items()}
        img = render_face(label, cue, int(colours[k]), rng, size, None if groups is None else int(groups[k]))
        if flags[k]:
            img = apply_backdoor(img, backdoor_kind)
        img.save(os.path.join(folder, paths[k]), quality=95)
    return len(labels)


def sample_groups(labels: np.ndarray, cues: np.ndarray, colours: np.ndarray, rng: np.random.Generator):
    """Group mode: a group per face, its cue shifts applied, hair mostly black outside group 0."""
    groups = rng.choice(len(GROUP_RATE), size=len(labels), p=GROUP_RATE)
    cues = cues.copy()
    for name, shift in GROUP_CUES.items():
        cues[:, CELEBA_ATTRIBUTES.index(name)] += np.asarray(shift)[groups]
    dark = (groups != 0) & (rng.random(len(labels)) < 0.6)
    colours = np.where(dark & (colours != 3), 0, colours)
    return groups, cues, colours


def _backdoor_flags(config: SynthFacesConfig, labels: np.ndarray, partition: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    b = config.backdoor
    y = labels[:, CELEBA_ATTRIBUTES.index(b.attribute)].astype(bool)
    share = np.where(partition == 0, np.where(y, b.positive_share, b.negative_share), b.eval_share)
    return rng.random(len(y)) < share


def write_synthfaces(folder: Path, config: SynthFacesConfig, workers: int = 2, progress=None) -> Path:
    """Write a SynthFaces data set in CelebA's on-disk format; atomic (temp folder, rename)."""
    folder = Path(folder)
    rng = np.random.default_rng(config.seed)
    labels, latent = sample_labels(config.n_images, rng)
    cues = sample_cues(labels, rng)
    partition = config.partition
    flags = (_backdoor_flags(config, labels, partition, rng) if config.backdoor
             else np.zeros(config.n_images, dtype=bool))
    colours, groups = latent["hair_colour"], None
    if config.groups:
        groups, cues, colours = sample_groups(labels, cues, colours, rng)
        paths = [f"{'val' if p == 2 else 'train'}/{i + 1}.jpg" for i, p in enumerate(partition)]
    else:
        paths = [f"img_align_celeba/{_image_name(i)}" for i in range(config.n_images)]

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in {p.split("/")[0] for p in paths}:
        (tmp / sub).mkdir(parents=True)
    chunk = 250
    jobs = [(str(tmp), config.seed, config.image_size, s, labels[s:s + chunk], cues[s:s + chunk],
             colours[s:s + chunk], config.backdoor.kind if config.backdoor else None,
             flags[s:s + chunk], None if groups is None else groups[s:s + chunk], paths[s:s + chunk])
            for s in range(0, config.n_images, chunk)]
    try:
        run_chunks(_render_chunk, jobs, workers, progress)
        if config.groups:
            _write_fairface_tables(tmp, labels, groups, paths, rng)
        else:
            _write_tables(tmp, labels, partition, flags if config.backdoor else None)
        (tmp / "synthfaces.json").write_text(json.dumps(
            {"generator_version": GENERATOR_VERSION, **asdict(config)}, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_tables(folder: Path, labels: np.ndarray, partition: np.ndarray, backdoor: np.ndarray | None):
    names = [_image_name(i) for i in range(len(labels))]
    with open(folder / "list_attr_celeba.txt", "w") as f:
        f.write(f"{len(labels)}\n{' '.join(CELEBA_ATTRIBUTES)} \n")
        for name, row in zip(names, labels):
            f.write(name + " " + " ".join(f"{v:2d}" for v in (2 * row.astype(int) - 1)) + "\n")
    with open(folder / "list_eval_partition.txt", "w") as f:
        f.writelines(f"{name} {p}\n" for name, p in zip(names, partition))
    if backdoor is not None:
        with open(folder / "list_backdoor.txt", "w") as f:
            f.writelines(f"{name} {int(v)}\n" for name, v in zip(names, backdoor))


def _write_fairface_tables(folder: Path, labels: np.ndarray, groups: np.ndarray, paths: list[str],
                           rng: np.random.Generator):
    male = labels[:, CELEBA_ATTRIBUTES.index("Male")]
    young = labels[:, CELEBA_ATTRIBUTES.index("Young")].astype(bool)
    age = np.where(young, rng.integers(2, 5, len(labels)), rng.integers(5, 9, len(labels)))
    tables = {"train": [], "val": []}
    for path, a, g, r in zip(paths, age, male, groups):
        tables[path.split("/")[0]].append(f"{path},{AGE_GROUPS[a]},{GENDERS[g]},{FAIRFACE_RACES[r]},True\n")
    for split, rows in tables.items():
        with open(folder / f"fairface_label_{split}.csv", "w") as f:
            f.write("file,age,gender,race,service_test\n")
            f.writelines(rows)
