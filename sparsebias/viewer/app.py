"""The viewer's Flask app: read-only pages over a ViewerData, and its thumbnails."""

from __future__ import annotations

import io
import secrets

from flask import Flask, abort, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from ..core.errors import MAX_SEED, SparsebiasError, first_line
from ..data.images import read_rgb
from .samples import CERTAIN, ViewerData, exemplar_cells, exemplar_sample, label_sample, outcome_sample

THUMBNAIL = 128
KINDS = {"cie": "Compression-identified exemplars: the model's decision differs from the reference's",
         "pie": "PIEs: right under the reference, wrong under the model",
         "overridden": "Samples the bundle's override table fixes"}


def create_app(data: ViewerData) -> Flask:
    app = Flask(__name__)
    app.config["VIEWER"] = data

    @app.get("/")
    def index():
        counts = {k: int(exemplar_cells(data, k, None, None).sum()) for k in KINDS
                  if k == "overridden" or "reference" in data.models}
        return render_template("index.html", d=data, counts=counts, kinds=KINDS,
                               positives=data.labels.sum(axis=0).tolist())

    @app.get("/labels/<attribute>")
    def labels(attribute):
        j, seed, n = _attribute(data, attribute), _seed(), _count()
        sections = {f"{name} ({len(rows)} shown)": [_item(data, r, j, "model") for r in rows]
                    for name, rows in label_sample(data, j, seed, n).items()}
        return _page(f"{attribute}: random positives and negatives", sections, seed, "labels", attribute=attribute)

    @app.get("/outcomes/<attribute>")
    def outcomes(attribute):
        j, seed, n = _attribute(data, attribute), _seed(), _count()
        model = request.args.get("model", "model")
        if model not in data.models:
            abort(404, f"no model {model!r}: choose one of {', '.join(data.models)}")
        sections = {f"{name} ({len(rows)} shown)": [_item(data, r, j, model) for r in rows]
                    for name, rows in outcome_sample(data, j, model, seed, n).items()}
        title = f"{attribute}: outcomes of {data.models[model].name} ({data.models[model].decided_by}; " \
                f"high certainty is |p - 0.5| >= {CERTAIN})"
        return _page(title, sections, seed, "outcomes", attribute=attribute, model=model)

    @app.get("/exemplars/<kind>")
    def exemplars(kind):
        if kind not in KINDS:
            abort(404, f"no exemplar kind {kind!r}: choose one of {', '.join(KINDS)}")
        if kind != "overridden" and "reference" not in data.models:
            abort(404, f"{kind} needs a reference model: start the viewer with --reference")
        seed, n = _seed(), _count()
        identity, value = _identity(data)
        cells = exemplar_cells(data, kind, identity, value)
        chosen = exemplar_sample(cells, seed, n)
        where = f" among {identity}={value}" if identity else ""
        sections = {f"{len(chosen)} of {int(cells.sum())} sample-attribute pairs{where}":
                    [_item(data, r, j, "model", show_attribute=True) for r, j in chosen]}
        return _page(KINDS[kind], sections, seed, "exemplars", kind=kind,
                     **({"identity": f"{identity}={value}"} if identity else {}), filters=True)

    @app.get("/image/<path:image_id>")
    def image(image_id):
        path = data.image_path(image_id)
        if path is None:
            abort(404, "not an image of this data set's split")
        try:
            img = read_rgb(path)
        except SparsebiasError as e:
            abort(404, str(e))
        img.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        buffer.seek(0)
        return send_file(buffer, mimetype="image/png", max_age=3600)

    @app.errorhandler(HTTPException)
    def error(e):
        return render_template("error.html", d=data, code=e.code, message=e.description), e.code

    @app.errorhandler(Exception)
    def unexpected(e):  # a page, not a traceback in the terminal: the viewer keeps serving
        message = f"unexpected {type(e).__name__}: {first_line(e)} (a sparsebias bug: please report it)"
        return render_template("error.html", d=data, code=500, message=message), 500

    def _page(title, sections, seed, endpoint, filters=False, **args):
        again = url_for(endpoint, **args, n=_count())
        same = url_for(endpoint, **args, n=_count(), seed=seed)
        groups = [f"{name}={v}" for name, values in data.identities.items() for v in sorted(set(values.tolist()))]
        return render_template("grid.html", d=data, title=title, sections=sections, seed=seed, again=again,
                               same=same, filters=filters, kind=args.get("kind"), groups=groups)

    return app


def _attribute(data: ViewerData, name: str) -> int:
    if name not in data.attributes:
        abort(404, f"unknown attribute {name!r}")
    return data.attributes.index(name)


def _seed() -> int:
    """The page's seed: given, or a fresh one that the page then shows."""
    text = request.args.get("seed")
    if text is None:
        return secrets.randbelow(MAX_SEED)
    if not text.isdigit() or int(text) > MAX_SEED:
        abort(400, f"seed must be a whole number from 0 to {MAX_SEED}, got {text[:40]!r}")
    return int(text)


def _count() -> int:
    text = request.args.get("n", "12")
    if not text.isdigit() or not 1 <= int(text) <= 200:
        abort(400, f"n must be a whole number from 1 to 200, got {text[:40]!r}")
    return int(text)


def _identity(data: ViewerData):
    text = request.args.get("identity")
    if not text:
        return None, None
    name, sep, value = text.partition("=")
    if not sep:
        abort(400, f"identity must be NAME=VALUE, got {text[:40]!r}")
    if name not in data.identities:
        abort(404, f"unknown identity {name!r}")
    return name, value


def _item(data: ViewerData, row: int, j: int, model: str, show_attribute: bool = False) -> dict:
    view = data.models[model]
    image_id = str(data.ids[row])
    return {"id": image_id, "src": url_for("image", image_id=image_id),
            "attribute": data.attributes[j] if show_attribute else None,
            "label": int(data.labels[row, j]), "p": float(view.probability[row, j]),
            "decision": int(view.decision[row, j]),
            "reference": None if "reference" not in data.models or model == "reference" else
            float(data.models["reference"].probability[row, j])}


def serve(data: ViewerData, host: str = "127.0.0.1", port: int = 0, echo=print) -> None:
    """Serve until interrupted; port 0 picks a free one. The address is printed first."""
    from werkzeug.serving import make_server

    server = make_server(host, port, create_app(data), threaded=True)
    echo(f"sparsebias view: http://{host}:{server.server_port}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
