import numpy as np
import pytest

from sparsebias.core import SparsebiasError
from sparsebias.data import read_celeba

ATTR = """4
Smiling Male  Young
000001.jpg  1 -1  1
000002.jpg -1  1  1
000003.jpg -1 -1 -1
000004.jpg  1  1 -1
"""
PARTITION = "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n"


def write_celeba(root, attr=ATTR, partition=PARTITION):
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    (root / "list_attr_celeba.txt").write_text(attr)
    (root / "list_eval_partition.txt").write_text(partition)
    return root


def test_reads_celeba_format(tmp_path):
    table = read_celeba(write_celeba(tmp_path))
    assert table.names == ("Smiling", "Male", "Young")
    assert table.ids.tolist() == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    np.testing.assert_array_equal(table.labels, [[1, 0, 1], [0, 1, 1], [0, 0, 0], [1, 1, 0]])
    assert table.split("train").tolist() == [0, 1]
    assert table.split("val").tolist() == [2]
    assert table.split("test").tolist() == [3]
    assert table.columns(["Young", "Smiling"]) == [2, 0]
    assert table.backdoor is None


def test_partition_order_may_differ_from_attribute_order(tmp_path):
    table = read_celeba(write_celeba(tmp_path, partition="000004.jpg 2\n000003.jpg 1\n000002.jpg 0\n000001.jpg 0\n"))
    assert table.partition.tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("attr, partition, message", [
    (ATTR.replace("000002.jpg -1  1  1", "000002.jpg -1  1"), PARTITION,
     "list_attr_celeba.txt:4: expected an image id and 3 values, got 3 fields"),
    (ATTR.replace("000003.jpg -1 -1 -1", "000003.jpg -1  2 -1"), PARTITION,
     "list_attr_celeba.txt:5: attribute values must be -1 or 1"),
    (ATTR.replace("000003.jpg -1 -1 -1", "000003.jpg -1 255 -1"), PARTITION,   # 255 is -1 as an int8
     "list_attr_celeba.txt:5: attribute values must be -1 or 1"),
    ("5\n" + ATTR[2:], PARTITION, "the first line says 5 images, the file has 4 rows"),
    (ATTR, "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n", "no partition for 1 images, e.g. 000004.jpg"),
    (ATTR, PARTITION.replace("000004.jpg 2", "000004.jpg 7"), "list_eval_partition.txt:4: expected 'image_id partition'"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, attr, partition, message):
    with pytest.raises(SparsebiasError, match=message):
        read_celeba(write_celeba(tmp_path, attr, partition))


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(SparsebiasError, match="data folder not found"):
        read_celeba(tmp_path / "nope")
    with pytest.raises(SparsebiasError, match=r"file not found: .*list_attr_celeba.txt \(or .csv"):
        read_celeba(tmp_path)


def test_unknown_attribute_lists_the_known_ones(tmp_path):
    table = read_celeba(write_celeba(tmp_path))
    with pytest.raises(SparsebiasError, match="unknown attribute 'Smilling'.*known: Smiling, Male, Young"):
        table.columns(["Smilling"])


def kaggle_csv(attr=ATTR):
    """ATTR as Kaggle's list_attr_celeba.csv: a header row instead of the count line, commas."""
    lines = attr.splitlines()
    return "\n".join([",".join(["image_id", *lines[1].split()]), *(",".join(row.split()) for row in lines[2:])]) + "\n"


def test_reads_kaggles_csv_layout_with_the_images_one_folder_deeper(tmp_path):
    from PIL import Image

    from sparsebias.data.images import split_images

    images = tmp_path / "img_align_celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for k in range(1, 5):
        Image.new("RGB", (178, 218), (40 * k, 0, 0)).save(images / f"00000{k}.jpg", quality=100)
    (tmp_path / "list_attr_celeba.csv").write_text(kaggle_csv().replace("\n", "\r\n"))
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + PARTITION.replace(" ", ","))
    table = read_celeba(tmp_path)
    expected = read_celeba(write_celeba(tmp_path / "txt"))
    assert table.names == expected.names and table.ids.tolist() == expected.ids.tolist()
    np.testing.assert_array_equal(table.labels, expected.labels)
    np.testing.assert_array_equal(table.partition, expected.partition)
    assert table.image_dir == images and table.source == "list_attr_celeba.csv"
    train = split_images(table, "train", 16, cache=tmp_path / "cache")
    assert train.shape == (2, 3, 16, 16) and abs(int(train[1, 0].mean()) - 80) <= 2


def test_reads_torchvisions_layout_from_the_folder_above(tmp_path):
    write_celeba(tmp_path / "celeba")
    table = read_celeba(tmp_path)
    assert table.root == tmp_path / "celeba" and table.image_dir == tmp_path / "celeba" / "img_align_celeba"
    assert table.names == ("Smiling", "Male", "Young")


@pytest.mark.parametrize("csv_text, message", [
    ("image_id,Smiling,Male,Young\n000001.jpg,1,-1\n", "list_attr_celeba.csv:2: expected an image id and 3 values"),
    ("000001.jpg,1,-1,1\n000002.jpg,-1,1,1\n", "list_attr_celeba.csv:1: expected a header of attribute names"),
    ("image_id,Smiling,Smiling\n000001.jpg,1,-1\n", "list_attr_celeba.csv:1: repeated attribute names"),
    ("image_id,Smiling\n", "list_attr_celeba.csv: no images listed"),
    ('image_id,Smiling\n"000001.jpg,1\n', "list_attr_celeba.csv:2: expected an image id and 1 values, got 1 fields"),
])
def test_malformed_kaggle_csv_names_the_file_and_line(tmp_path, csv_text, message):
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_attr_celeba.csv").write_text(csv_text)
    (tmp_path / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,0\n000002.jpg,0\n")
    with pytest.raises(SparsebiasError, match=message):
        read_celeba(tmp_path)
