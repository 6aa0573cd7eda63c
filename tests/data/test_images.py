import os

import numpy as np
import pytest
from PIL import Image

from sparsebias.core import SparsebiasError
from sparsebias.data import images as images_module
from sparsebias.data import read_celeba
from sparsebias.data.images import load_image
from sparsebias.data.loader import FaceImages

ATTR = "4\nSmiling Male\n000001.jpg 1 -1\n000002.jpg -1 1\n000003.jpg -1 -1\n000004.jpg 1 1\n"
PARTITION = "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n"


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "list_attr_celeba.txt").write_text(ATTR)
    (root / "list_eval_partition.txt").write_text(PARTITION)
    rng = np.random.default_rng(0)
    for k in range(1, 5):  # not square, so resizing and cropping both happen
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
            root / "img_align_celeba" / f"{k:06d}.jpg", quality=95)
    return root


def test_split_is_decoded_once_into_the_cache(celeba, tmp_path, monkeypatch):
    table = read_celeba(celeba)
    train = FaceImages(table, "train", ["Smiling"], 16, cache=tmp_path / "cache")
    assert train.images.shape == (2, 3, 16, 16) and train.images.dtype.is_floating_point is False
    for i, path in enumerate(train.paths):
        np.testing.assert_array_equal(train.images[i].numpy(), load_image(path, 16))
    assert not list((tmp_path / "cache").glob("*tmp*")), "no temporary file left behind"

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(images_module, "load_image", no_decoding)
    again = FaceImages(table, "train", ["Smiling", "Male"], 16, cache=tmp_path / "cache")
    np.testing.assert_array_equal(again.images.numpy(), train.images.numpy())
    image, label = again[1]
    assert image.shape == (3, 16, 16) and label.tolist() == [0.0, 1.0]


def test_cache_key_follows_size_split_and_labels(celeba, tmp_path):
    table = read_celeba(celeba)
    cache = tmp_path / "cache"
    FaceImages(table, "train", ["Smiling"], 16, cache=cache)
    FaceImages(table, "train", ["Smiling"], 8, cache=cache)
    FaceImages(table, "test", ["Smiling"], 16, cache=cache)
    assert len(list(cache.glob("*.npy"))) == 3
    label_file = celeba / "list_attr_celeba.txt"
    label_file.write_text(label_file.read_text() + "\n")    # a rewritten data set gets a new array
    FaceImages(read_celeba(celeba), "train", ["Smiling"], 16, cache=cache)
    assert len(list(cache.glob("*.npy"))) == 4


def test_processes_started_together_decode_once(celeba, tmp_path):
    import multiprocessing

    table = read_celeba(celeba)
    with multiprocessing.get_context("spawn").Pool(3) as pool:   # forking a threaded xdist worker can hang
        arrays = pool.starmap(_decode_in_process, [(table, tmp_path / "cache")] * 3)
    assert all(np.array_equal(a, arrays[0]) for a in arrays)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def _decode_in_process(table, cache):
    return FaceImages(table, "train", ["Smiling"], 16, cache=cache).images.numpy().copy()


def test_unreadable_image_leaves_no_cache_file(celeba, tmp_path):
    (celeba / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SparsebiasError, match="cannot read image .*000002.jpg"):
        FaceImages(read_celeba(celeba), "train", ["Smiling"], 16, cache=tmp_path / "cache")
    assert not [f for f in (tmp_path / "cache").iterdir() if not f.name.endswith(".lock")]


def test_a_cache_the_disk_cannot_hold_is_refused_before_decoding(celeba, tmp_path, monkeypatch):
    """2 images x 3 x 16 x 16 = 1,536 bytes; a disk with 1,535 free refuses it, 1,536 takes it."""
    usage = images_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(images_module.shutil, "disk_usage", lambda folder: usage._replace(free=1535))
    with pytest.raises(SparsebiasError, match=r"the decoded cache of 2 images at 16 px needs 0.0 GB in .*cache, "
                                              r"which has 0.0 GB free; .* SPARSEBIAS_CACHE"):
        FaceImages(read_celeba(celeba), "train", ["Smiling"], 16, cache=tmp_path / "cache")
    assert not [f for f in (tmp_path / "cache").iterdir() if not f.name.endswith(".lock")]
    monkeypatch.setattr(images_module.shutil, "disk_usage", lambda folder: usage._replace(free=1536))
    assert FaceImages(read_celeba(celeba), "train", ["Smiling"], 16, cache=tmp_path / "cache").images.shape[0] == 2


def test_numpy_standardize_is_torchs_normalize_bit_for_bit():
    """predict and the audit's re-run prepare images with numpy; training with torch: the same floats."""
    import torch

    from sparsebias.data.images import standardize
    from sparsebias.data.loader import normalize

    batch = np.random.default_rng(1).integers(0, 256, (4, 3, 9, 7), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ours = standardize(batch, mean, std)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, normalize(torch.from_numpy(batch), mean, std).numpy())


def _pid(_job) -> int:
    return os.getpid()


def test_chunks_fork_only_from_a_process_with_no_other_thread():
    """A fork copies the locks other threads hold (pytest-xdist's, a notebook's): then the
    chunks run here instead, where no child can wait on such a lock forever."""
    import threading

    from sparsebias.data.parallel import run_chunks

    def pids():
        seen = []
        run_chunks(_pid, [0, 1, 2, 3], 2, progress=seen.append)
        return set(seen)

    if threading.active_count() == 1:
        assert os.getpid() not in pids()
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert pids() == {os.getpid()}
    finally:
        release.set()
        other.join()


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with orientation 6 ("rotate 90 clockwise to show") is
    read as it is shown: the same pixels as the upright image."""
    upright = np.zeros((32, 16, 3), dtype=np.uint8)
    upright[:16] = 255                                   # white top half
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)   # 16 high, 32 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.png", exif=exif)
    got = load_image(tmp_path / "phone.png", 16)         # rows 8-23 of the upright image
    np.testing.assert_array_equal(got[:, :8], 255)
    np.testing.assert_array_equal(got[:, 8:], 0)


def test_sixteen_bit_grey_levels_are_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    got = load_image(tmp_path / "grey16.png", 4)
    np.testing.assert_array_equal(got[:, 0], [[0, 1, 128, 255]] * 3)


def test_floating_point_pixels_are_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(SparsebiasError, match=r"float\.tif: floating-point pixels"):
        load_image(tmp_path / "float.tif", 8)


def test_cache_key_names_the_decoder(celeba, monkeypatch):
    """Arrays decoded by an older reader (before EXIF orientation, say) are not reused."""
    table = read_celeba(celeba)
    ids = table.ids[table.split("train")]
    before = images_module.cache_key(table, ids, 16)
    monkeypatch.setattr(images_module, "DECODER", images_module.DECODER + 1)
    assert images_module.cache_key(table, ids, 16) != before
