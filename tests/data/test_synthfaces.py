import hashlib

import numpy as np
import pytest

from sparsebias.core import SparsebiasError
from sparsebias.data import CELEBA_ATTRIBUTES, read_celeba, synthfaces_config
from sparsebias.data.synthfaces import POSITIVE_RATE, Backdoor, SynthFacesConfig, sample_labels, write_synthfaces

SMALL = SynthFacesConfig(n_train=40, n_val=10, n_test=10, image_size=32, seed=3)


@pytest.fixture(scope="module")
def labels():
    return sample_labels(40_000, np.random.default_rng(0))[0]


def col(labels, name):
    return labels[:, CELEBA_ATTRIBUTES.index(name)].astype(bool)


def folder_digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_labels_match_celeba_rates_and_imbalance(labels):
    rates = labels.mean(axis=0)
    for name, rate in POSITIVE_RATE.items():
        assert rates[CELEBA_ATTRIBUTES.index(name)] == pytest.approx(rate, abs=0.02), name
    imbalance = np.maximum(rates, 1 - rates).mean()
    assert 0.76 <= imbalance <= 0.84


@pytest.mark.parametrize("attribute, direction", [
    ("Mustache", 1), ("Goatee", 1), ("5_o_Clock_Shadow", 1), ("Wearing_Necktie", 1),
    ("Heavy_Makeup", -1), ("Wearing_Lipstick", -1), ("Wearing_Earrings", -1), ("No_Beard", -1),
])
def test_male_correlates_like_celeba(labels, attribute, direction):
    male = col(labels, "Male")
    a = col(labels, attribute)
    odds = lambda p: p / (1 - p)  # noqa: E731
    odds_ratio = odds(a[male].mean()) / odds(a[~male].mean())
    assert odds_ratio ** direction > 3, (attribute, odds_ratio)


def test_age_and_weight_correlations(labels):
    young, chubby = col(labels, "Young"), col(labels, "Chubby")
    assert col(labels, "Gray_Hair")[~young].mean() > 4 * col(labels, "Gray_Hair")[young].mean()
    assert col(labels, "Double_Chin")[chubby].mean() > 3 * col(labels, "Double_Chin")[~chubby].mean()


def test_exclusive_labels(labels):
    hair = labels[:, [CELEBA_ATTRIBUTES.index(n) for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]]
    assert hair.sum(axis=1).max() == 1
    assert not (col(labels, "Bald") & hair.any(axis=1)).any()
    beard = col(labels, "Goatee") | col(labels, "Mustache") | col(labels, "Sideburns")
    assert not (beard & col(labels, "No_Beard")).any()


def test_writes_celeba_format_repeatably(tmp_path):
    a = write_synthfaces(tmp_path / "a", SMALL, workers=1)
    b = write_synthfaces(tmp_path / "b", SMALL, workers=2)
    assert folder_digest(a) == folder_digest(b)
    c = write_synthfaces(tmp_path / "c", SynthFacesConfig(n_train=40, n_val=10, n_test=10, image_size=32, seed=4))
    assert folder_digest(a) != folder_digest(c)

    table = read_celeba(a)
    assert table.names == CELEBA_ATTRIBUTES
    assert [len(table.split(s)) for s in ("train", "val", "test")] == [40, 10, 10]
    assert len(list((a / "img_align_celeba").glob("*.jpg"))) == 60
    assert not list(tmp_path.glob(".*tmp*")), "no temporary folder left behind"


def test_backdoor_shares(tmp_path):
    config = SynthFacesConfig(n_train=400, n_val=10, n_test=200, image_size=16,
                              backdoor=Backdoor("Smiling", "grayscale", 0.9, 0.1, 0.5))
    table = read_celeba(write_synthfaces(tmp_path / "bd", config))
    smiling = table.labels[:, table.columns(["Smiling"])[0]].astype(bool)
    train, test = table.partition == 0, table.partition == 2
    assert table.backdoor[train & smiling].mean() == pytest.approx(0.9, abs=0.08)
    assert table.backdoor[train & ~smiling].mean() == pytest.approx(0.1, abs=0.08)
    assert table.backdoor[test].mean() == pytest.approx(0.5, abs=0.12)
    from PIL import Image
    flagged = table.ids[np.flatnonzero(table.backdoor == 1)[0]]
    rgb = np.asarray(Image.open(table.image_dir / flagged).convert("RGB")).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 8, "grayscale backdoor leaves no colour"


def test_option_string():
    c = synthfaces_config("train=50,val=20,test=30,size=32,seed=5,backdoor=Blond_Hair/square/0.95/0.05")
    assert (c.n_train, c.n_val, c.n_test, c.image_size, c.seed) == (50, 20, 30, 32, 5)
    assert c.backdoor == Backdoor("Blond_Hair", "square", 0.95, 0.05)
    with pytest.raises(SparsebiasError, match="unknown SynthFaces option 'colour'"):
        synthfaces_config("colour=red")
    with pytest.raises(SparsebiasError, match="train split needs 10 to 2,000,000 images"):
        synthfaces_config("train=100000000000")
    with pytest.raises(SparsebiasError, match="seed must be 0 or more"):
        synthfaces_config("seed=-1")
    with pytest.raises(SparsebiasError, match="not a CelebA attribute"):
        synthfaces_config("backdoor=Blonde/square/0.9/0.1")


def test_extreme_cues_render(tmp_path):
    """A frown deep enough to turn the mouth's width negative, with the mouth open, once crashed
    the build of a CelebA-sized set (face 3183 of train=2000,val=19867,test=19962)."""
    import numpy as np

    from sparsebias.data import CELEBA_ATTRIBUTES
    from sparsebias.data.synthfaces import render_face

    label = {name: 0 for name in CELEBA_ATTRIBUTES}
    for smiling in (-9.0, -6.2, 0.0, 9.0):
        cue = {name: 0.0 for name in CELEBA_ATTRIBUTES} | {"Smiling": smiling, "Mouth_Slightly_Open": 3.0}
        image = render_face(label, cue, 0, np.random.default_rng(0), 64, None)
        assert image.size == (64, 64)
