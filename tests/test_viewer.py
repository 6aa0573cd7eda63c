"""`sparsebias view`: every page through Flask's test client, its safety properties, and
a real headless Chromium loading the page from the running server."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sparsebias.cli import main
from sparsebias.viewer import ViewerData, create_app, load_viewer_data
from sparsebias.viewer.samples import ModelView


@pytest.fixture(scope="module")
def data(sparse_bundle, dense_bundle):
    return load_viewer_data(sparse_bundle.path, dense_bundle.path)


@pytest.fixture(scope="module")
def client(data):
    return create_app(data).test_client()


def images_on(html: str) -> list[str]:
    return re.findall(r'<img src="/image/([^"]+)"', html)


def test_index_lists_attributes_and_exemplars(client, data):
    html = client.get("/").get_data(as_text=True)
    assert all(f"/labels/{a}" in html for a in data.attributes)
    assert "/exemplars/cie" in html and "/exemplars/pie" in html


def test_labels_page_shows_positives_and_negatives_with_their_seed(client, data):
    j = data.attributes.index("Smiling")
    r = client.get("/labels/Smiling?seed=7&n=5")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="seed" href="/labels/Smiling?n=5&amp;seed=7">7<' in html
    shown = images_on(html)
    assert len(shown) == 10
    row = {x: i for i, x in enumerate(data.ids.tolist())}
    labels = [int(data.labels[row[x], j]) for x in shown]
    assert labels == [1] * 5 + [0] * 5
    assert client.get("/labels/Smiling?seed=7&n=5").get_data(as_text=True) == html  # the seed redraws it
    fresh = [re.search(r'id="seed"[^>]*>(\d+)<', client.get("/labels/Smiling").get_data(as_text=True)).group(1)
             for _ in range(2)]
    assert fresh[0] != fresh[1]  # reloading draws anew


def test_outcomes_page_splits_by_outcome_and_certainty(client, data):
    j = data.attributes.index("Male")
    html = client.get("/outcomes/Male?model=model&seed=3&n=4").get_data(as_text=True)
    view, row = data.models["model"], {x: i for i, x in enumerate(data.ids.tolist())}
    for section in re.split(r"<h2>", html)[1:]:
        name = section[:section.index("(")].strip()
        outcome, certainty = name.split(", ")
        for image in images_on(section):
            i = row[image]
            y, d, p = data.labels[i, j], view.decision[i, j], view.probability[i, j]
            assert {"TP": y == 1 and d == 1, "FN": y == 1 and d == 0, "FP": y == 0 and d == 1,
                    "TN": y == 0 and d == 0}[outcome]
            assert (abs(p - 0.5) >= 0.4) == (certainty == "high certainty")
    assert client.get("/outcomes/Male?model=reference&seed=3").status_code == 200


@pytest.mark.parametrize("kind", ["cie", "pie", "overridden"])
def test_exemplar_pages_filter_by_identity(client, data, kind):
    html = client.get(f"/exemplars/{kind}?identity=Male=1&seed=2&n=30").get_data(as_text=True)
    row = {x: i for i, x in enumerate(data.ids.tolist())}
    male = data.identities["Male"]
    assert all(male[row[x]] == "1" for x in images_on(html))
    if kind == "pie":
        ref, model = data.models["reference"].decision, data.models["model"].decision
        for x, attribute in re.findall(r'alt="([^"]+)"[^<]*>\s*<figcaption>[^<]*<br>([^<]+)<br>', html):
            i, j = row[x], data.attributes.index(attribute)
            assert ref[i, j] == data.labels[i, j] != model[i, j]


def test_images_are_thumbnails_of_the_split_only(client, data, tmp_path):
    r = client.get(f"/image/{data.ids[0]}")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data.startswith(b"\x89PNG")
    train_image = next(p.name for p in data.image_dir.iterdir() if p.name not in set(data.ids.tolist()))
    for path in ["/image/../../../../etc/passwd", "/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/image//etc/passwd",
                 f"/image/{data.image_dir}/{data.ids[0]}", f"/image/{train_image}", "/image/nothing.jpg"]:
        assert client.get(path, follow_redirects=True).status_code == 404, path


@pytest.mark.parametrize("url, code", [
    ("/labels/Not_An_Attribute", 404), ("/outcomes/Smiling?model=other", 404), ("/exemplars/everything", 404),
    ("/labels/Smiling?seed=abc", 400), ("/labels/Smiling?seed=-1", 400), ("/labels/Smiling?seed=99999999999", 400),
    ("/labels/Smiling?n=0", 400), ("/labels/Smiling?n=5000", 400), ("/exemplars/cie?identity=Male", 400),
    ("/exemplars/cie?identity=Bald=1", 404),
])
def test_malformed_requests_are_4xx_pages(client, url, code):
    r = client.get(url)
    assert r.status_code == code and "<h1>" in r.get_data(as_text=True)


def test_read_only(client, sparse_bundle):
    before = {p: p.stat().st_mtime_ns for p in sparse_bundle.path.rglob("*")}
    assert client.post("/labels/Smiling").status_code == 405
    for url in ["/", "/labels/Smiling?seed=1", "/exemplars/cie?seed=1"]:
        client.get(url)
    assert {p: p.stat().st_mtime_ns for p in sparse_bundle.path.rglob("*")} == before


def test_every_string_is_escaped(data):
    evil = "<script>alert(1)</script>"
    odd = ViewerData("test", np.array(['"><img src=x onerror=alert(1)>']), data.image_dir, [evil],
                     np.array([[1]], np.int8), {"I": np.array([evil])},
                     {"model": ModelView(evil, np.array([[0.9]]), np.array([[1]], np.int8), "p > 0.5")},
                     np.zeros((1, 1), bool))
    client = create_app(odd).test_client()
    for url in ["/", "/labels/" + evil + "?seed=1", "/exemplars/overridden?seed=1"]:
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;" in client.get("/").get_data(as_text=True)


def test_group_bundles_are_viewed_one_class_at_a_time(group_bundles):
    dense, fair = group_bundles
    client = create_app(load_viewer_data(fair.path, dense.path)).test_client()
    html = client.get("/labels/race=Black?seed=1&n=3").get_data(as_text=True)
    assert len(images_on(html)) == 6
    assert client.get("/exemplars/pie?identity=gender=Female&seed=1").status_code == 200


def test_missing_data_is_a_clear_error(sparse_bundle, tmp_path):
    result = CliRunner().invoke(main, ["view", str(sparse_bundle.path), "--data", f"celeba:{tmp_path}/none"])
    assert result.exit_code == 2 and "data folder not found" in result.output and "Traceback" not in result.output


def browser():
    return shutil.which("chromium") and shutil.which("chromedriver")


@pytest.mark.skipif(not browser(), reason="needs Debian's chromium and chromium-driver (make test installs them)")
def test_headless_chromium_renders_the_thumbnails(sparse_bundle, dense_bundle, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = subprocess.Popen([str(Path(sys.executable).parent / "sparsebias"), "view", str(sparse_bundle.path),
                               "--reference", str(dense_bundle.path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = None
        deadline = time.time() + 120
        while address is None and time.time() < deadline:
            line = server.stdout.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            address = match and match.group(1)
        assert address, "the viewer printed no address"
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            driver.get(address + "outcomes/Male?seed=5&n=6")
            deadline = time.time() + 30
            while time.time() < deadline and not driver.execute_script(
                    "return [...document.images].every(i => i.complete)"):
                time.sleep(0.2)
            sizes = driver.execute_script("return [...document.images].map(i => [i.naturalWidth, i.naturalHeight])")
            assert len(sizes) >= 6 and all(w > 0 and h > 0 for w, h in sizes)
            assert driver.find_element("id", "seed").text == "5"
            shot = Path(os.environ.get("SPARSEBIAS_SCREENSHOTS", tmp_path)) / "viewer.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
