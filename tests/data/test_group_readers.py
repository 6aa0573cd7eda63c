"""FairFace and UTKFace readers on small folders in each data set's exact on-disk format,
and SynthFaces written in FairFace's format."""

import numpy as np
import pytest
from PIL import Image

from sparsebias.core import SparsebiasError
from sparsebias.data import open_data, read_fairface, read_utkface
from sparsebias.data.groups import AGE_GROUPS, FAIRFACE_RACES, GENDERS, UTKFACE_RACES, stable_bucket

FAIRFACE_TRAIN = """file,age,gender,race,service_test
train/1.jpg,50-59,Male,East Asian,True
train/2.jpg,30-39,Female,Indian,False
train/3.jpg,3-9,Female,Black,False
train/4.jpg,20-29,Male,Middle Eastern,True
train/5.jpg,more than 70,Female,Latino_Hispanic,True
train/6.jpg,0-2,Male,Southeast Asian,False
train/7.jpg,10-19,Male,White,True
"""
FAIRFACE_VAL = """file,age,gender,race,service_test
val/1.jpg,60-69,Female,White,True
val/2.jpg,40-49,Male,Black,False
"""


def jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (90, 60, 30)).save(path)


@pytest.fixture
def fairface(tmp_path):
    (tmp_path / "fairface_label_train.csv").write_text(FAIRFACE_TRAIN)
    (tmp_path / "fairface_label_val.csv").write_text(FAIRFACE_VAL)
    for line in (FAIRFACE_TRAIN + FAIRFACE_VAL).splitlines():
        if line.endswith(("True", "False")):
            jpg(tmp_path / line.split(",")[0])
    return tmp_path


def column(table, name):
    j = table.names.index(name)
    return [table.classes[j][v] for v in table.labels[:, j]]


def test_fairface_labels_and_splits(fairface):
    t = read_fairface(fairface)
    assert t.names == ("age", "gender", "race") and t.classes[2] == FAIRFACE_RACES
    assert t.ids.tolist()[:2] == ["train/1.jpg", "train/2.jpg"]
    assert column(t, "race")[:4] == ["East Asian", "Indian", "Black", "Middle Eastern"]
    assert column(t, "gender")[:2] == ["Male", "Female"] and GENDERS.index("Male") == 1
    assert column(t, "age")[4] == "more than 70"
    # FairFace's val CSV is our test split; one tenth of its train files (by name hash) are val
    assert t.partition[-2:].tolist() == [2, 2]
    assert t.partition[:7].tolist() == [1 if stable_bucket(f"train/{i}.jpg") == 0 else 0 for i in range(1, 8)]
    assert (t.image_dir / t.ids[0]).is_file()


@pytest.mark.parametrize("edit, message", [
    (lambda p: (p / "fairface_label_train.csv").write_text(FAIRFACE_TRAIN.replace("East Asian", "Martian")),
     r"fairface_label_train.csv:2: race 'Martian' is not one of White"),
    (lambda p: (p / "fairface_label_val.csv").write_text(FAIRFACE_VAL.replace("Female", "F")),
     r"fairface_label_val.csv:2: gender 'F' is not one of Female, Male"),
    (lambda p: (p / "fairface_label_train.csv").write_text(FAIRFACE_TRAIN.replace("race", "ethnicity")),
     r"fairface_label_train.csv:1: no 'race' column"),
    (lambda p: (p / "fairface_label_val.csv").unlink(), "file not found: .*fairface_label_val.csv"),
    (lambda p: (p / "train/1.jpg").unlink(), "image train/1.jpg is listed but not on disk"),
])
def test_fairface_problems_name_the_file_and_line(fairface, edit, message):
    edit(fairface)
    with pytest.raises(SparsebiasError, match=message):
        read_fairface(fairface)


UTK_NAMES = ["25_0_0_20170116174525125.jpg.chip.jpg", "1_1_2_20161219140623097.jpg.chip.jpg",
             "70_1_3_20170110120000000.jpg.chip.jpg", "9_0_4_20170103200000111.jpg", "45_1_1_20170109150557335.jpg"]


@pytest.mark.parametrize("nested", ["", "UTKFace", "crop_part1"])
def test_utkface_labels_from_file_names(tmp_path, nested):
    folder = tmp_path / nested
    for name in UTK_NAMES + ["39_1_20170116174525125.jpg.chip.jpg"]:  # the last lacks its race field
        jpg(folder / name)
    (folder / "README.txt").write_text("not an image")
    messages = []
    t = read_utkface(tmp_path, echo=messages.append)
    assert sorted(t.ids.tolist()) == sorted(UTK_NAMES)
    by_name = {name: i for i, name in enumerate(t.ids)}
    row = t.labels[by_name["25_0_0_20170116174525125.jpg.chip.jpg"]]
    assert (AGE_GROUPS[row[0]], GENDERS[row[1]], UTKFACE_RACES[row[2]]) == ("20-29", "Male", "White")
    row = t.labels[by_name["70_1_3_20170110120000000.jpg.chip.jpg"]]
    assert (AGE_GROUPS[row[0]], GENDERS[row[1]], UTKFACE_RACES[row[2]]) == ("more than 70", "Female", "Indian")
    assert messages == ["Skipped 1 file(s) not named age_gender_race_date.jpg, e.g. 39_1_20170116174525125.jpg.chip.jpg"]
    expected = [0 if stable_bucket(n) < 7 else 1 if stable_bucket(n) == 7 else 2 for n in t.ids]
    assert t.partition.tolist() == expected


@pytest.mark.parametrize("name, message", [
    ("30_0_7_20170116174525125.jpg.chip.jpg", "race 7 is not one of 0-4"),
    ("30_2_1_20170116174525125.jpg.chip.jpg", "gender 2 is not 0 .male. or 1 .female."),
])
def test_utkface_bad_labels_are_errors(tmp_path, name, message):
    jpg(tmp_path / UTK_NAMES[0])
    jpg(tmp_path / name)
    with pytest.raises(SparsebiasError, match=message):
        read_utkface(tmp_path)


def test_utkface_prefers_the_full_release_to_its_first_part(tmp_path):
    jpg(tmp_path / "crop_part1" / UTK_NAMES[0])
    for name in UTK_NAMES:
        jpg(tmp_path / "UTKFace" / name)
    table = read_utkface(tmp_path)
    assert table.image_dir == tmp_path / "UTKFace" and len(table.ids) == len(UTK_NAMES)


def test_utkface_empty_folder(tmp_path):
    with pytest.raises(SparsebiasError, match="no UTKFace images"):
        read_utkface(tmp_path)


def test_open_data_names_the_readers(fairface, tmp_path):
    assert open_data(f"fairface:{fairface}").names == ("age", "gender", "race")
    with pytest.raises(SparsebiasError, match="fairface:PATH needs a path"):
        open_data("fairface")
    with pytest.raises(SparsebiasError, match="unknown data set 'imagenet'"):
        open_data("imagenet:/x")


def test_synthfaces_groups_is_a_fairface_folder():
    t = open_data("synthfaces:train=150,val=20,test=150,size=24,groups=1", echo=lambda *a: None)
    assert (t.root / "fairface_label_val.csv").is_file() and t.classes[2] == FAIRFACE_RACES
    assert np.bincount(t.partition).tolist()[2] == 150
    race = np.bincount(t.labels[:, 2], minlength=7) / len(t.labels)
    assert race[0] == race.max() and race[0] > 0.3 and (race > 0).all()  # one large group, six smaller
    with pytest.raises(SparsebiasError, match="groups and backdoor"):
        open_data("synthfaces:groups=1,backdoor=Blond_Hair")
