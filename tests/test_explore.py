"""The explorer page: its numbers for every registered type, then the page itself in
headless Chromium (selenium): no console error, no network request, sliders, a clicked
point's numbers against the model, the class selector and the redraw time."""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import flowscope.train
from flowscope.cli import main
from flowscope.explore import DTS, TIMES, explorer_data, write_explorer
from flowscope.models import MODELS
from flowscope.runs import load_run, run_data

FIXTURES = Path(__file__).parent / "fixtures" / "runs_44350cf"
SMALL = {"n": 60, "grid": 8, "frame_grid": 6, "probes": 3}
CHROMEDRIVER = "/usr/bin/chromedriver"
# The target is a redraw within 200 ms; on a quiet machine the median move takes
# 57-90 ms (benchmarks/README.md). A test must not fail with the machine's load, so the
# bound here is 5x the target: it catches a page that redraws everything on each move.
REDRAW_LIMIT_MS = 1000


# every registered type, and conditional versions of the types that may be either
CASES = [(e.name, e.conditional) for e in MODELS] + [
    (e.name, True) for e in MODELS if getattr(e, "conditional_option", False)
]


def small_model(name, conditional=None):
    entry = MODELS.get(name)
    args = dict(entry.small)
    if entry.conditional if conditional is None else conditional:
        args["num_classes"] = 2
    torch.manual_seed(0)
    model = entry.build(features=2, **args)
    for p in model.parameters():  # a model that is not the identity
        p.data.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name, conditional", CASES)
def test_every_type_gives_exact_probe_numbers(name, conditional):
    model = small_model(name, conditional)
    page = explorer_data(model, **SMALL)
    classes = [None] if model.num_classes is None else list(range(model.num_classes))
    assert len(page["per_class"]) == len(classes)
    for c, part in zip(classes, page["per_class"], strict=True):
        items = part["probes"]["items"]
        assert len(items) == SMALL["probes"] ** 2
        x = torch.tensor([it["x"] for it in items])
        lp = model.log_prob(x, c)
        traj = model.trajectory(x, labels=c, inverse=True, **part["probes"]["options"])
        for i, it in enumerate(items):
            # float32 numbers computed in batches of other sizes: a few ulps of log p apart
            assert it["log_prob"] == pytest.approx(float(lp[i]), rel=1e-6, abs=1e-5)
            # the terms add up to log p(x): per step for a flow, -int div v for an ODE
            assert sum(v for _, v in it["terms"]) == pytest.approx(float(lp[i]), abs=1e-4)
            assert torch.allclose(
                torch.tensor(it["trajectory"]).double(), traj[:, i].double(), atol=1e-5
            )
        # every state along the flow, both directions, and a density frame per state
        assert len(part["gen"]) == len(part["inv"]) == len(part["densities"])
        if page["ode"]:
            assert len(part["gen"]) == len(TIMES) and len(part["arrows"]) == len(TIMES)
            assert [d["dt"] for d in part["dts"]] == list(DTS)


def test_flow_state_densities_integrate_to_one():
    # the density of each intermediate state of a flow is a density: about 1 on its grid
    model = small_model("nf")
    part = explorer_data(model, n=400, grid=8, frame_grid=40, probes=2)["per_class"][0]
    for frame in part["densities"][1:-1]:
        z = torch.tensor([[float("nan") if v is None else v for v in row] for row in frame["z"]])
        dx = (frame["x"][-1] - frame["x"][0]) / (len(frame["x"]) - 1)
        dy = (frame["y"][-1] - frame["y"][0]) / (len(frame["y"]) - 1)
        mass = float(torch.nan_to_num(z.double().exp()).sum() * dx * dy)
        assert 0.85 < mass < 1.05


def test_cli_writes_the_page_offline(tmp_path):
    run = tmp_path / "nf"
    shutil.copytree(FIXTURES / "nf", run)
    assert main(["explore", str(run), "-n", "50"]) == 0
    html = (run / "explore.html").read_text()
    # plotly.js is inlined: no script or style sheet comes from elsewhere (the browser
    # tests check that no request is made)
    assert "plotly" in html.lower() and len(html) > 1_000_000
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=", html)
    assert main(["explore", str(tmp_path / "missing")]) == 2


def test_a_data_files_page_draws_the_whole_file(tmp_path, monkeypatch):
    """A file's test part is 5% of it (13 of Old Faithful's 272 points): the page draws
    all its points; a registry run draws its (large) test part."""
    import flowscope.explore as explore
    from flowscope.runs import train_run

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0])
    data = tmp_path / "pts.csv"
    data.write_text("a,b\n" + "".join(f"{u!r},{v!r}\n" for u, v in x.tolist()))
    config = flowscope.train.TrainConfig(epochs=1, batch_size=16)
    train_run("nf", tmp_path / "run", data=str(data), config=config, model_args={"couplings": 2})
    drawn = {}
    monkeypatch.setattr(explore, "write_explorer", lambda m, out, x, labels, **k: drawn.update(x=x))
    explore.explore_run(tmp_path / "run")
    got, want = sorted(drawn["x"].double().tolist()), sorted(x.tolist())
    assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-6, atol=0)
    # A test part with the page's n points is enough: the held-out points alone.
    explore.explore_run(tmp_path / "run", n=2)
    test = run_data(load_run(tmp_path / "run")[1], "test").x
    assert len(test) >= 2 and torch.equal(drawn["x"], test)


# -- in the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver():
    missing = [p for p in ("chromium", "chromedriver") if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"the browser tests need {' and '.join(missing)}: install them with "
            "`apt-get update && apt-get install -y chromium chromium-driver` (Debian), "
            "then run the tests again"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1900"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    path = shutil.which("chromedriver") or CHROMEDRIVER
    d = webdriver.Chrome(service=Service(path), options=options)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore")
    written = {}
    for name in ("nf", "cfm"):
        model, info = load_run(FIXTURES / name)
        opts = {"n": 1500, "grid": 16, "frame_grid": 10, "probes": 5}
        written[name] = (write_explorer(model, out / f"{name}.html", **opts), model)
    return written


def open_page(driver, path):
    driver.get(path.as_uri())
    assert driver.execute_script("return !!(window.flowscopeExplorer && flowscopeExplorer.ready)")
    driver.get_log("browser")  # start each check with an empty log


def plot_data(driver, id_, trace=0, key="x"):
    return driver.execute_script(
        f"return document.getElementById('{id_}').data[{trace}].{key}.slice(0, 50)"
    )


def test_page_loads_offline_without_errors(driver, pages):
    for name, (path, _) in pages.items():
        driver.get(path.as_uri())
        ready = driver.execute_script("return window.flowscopeExplorer.ready")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert ready and not errors, (name, errors)
        urls = driver.execute_script(
            "return [location.href].concat(performance.getEntries()"
            ".filter(e => e.name && e.entryType === 'resource').map(e => e.name))"
        )
        assert all(u.split(":")[0] in ("file", "data", "about", "blob") for u in urls), urls
        n_plots = driver.execute_script(
            "return document.querySelectorAll('.js-plotly-plot').length"
        )
        assert n_plots == (6 if name == "cfm" else 5)


def test_slider_changes_the_drawn_frame_quickly(driver, pages):
    path, _ = pages["cfm"]
    open_page(driver, path)
    for panel in ("flow", "inverse", "densities"):
        key = "z" if panel == "densities" else "x"
        times = []
        for step in (3, 5, 7, 9, 6):
            before = plot_data(driver, panel, 0, key)
            times.append(
                driver.execute_script(
                    f"var s = document.getElementById('{panel}-step'); s.value = {step};"
                    "var t0 = performance.now(); s.dispatchEvent(new Event('input'));"
                    "return performance.now() - t0;"
                )
            )
            assert plot_data(driver, panel, 0, key) != before, (panel, step)
        # the median move: one slow redraw on a loaded machine is not the page's speed
        assert sorted(times)[2] < REDRAW_LIMIT_MS, (panel, times)
        print(f"redraw of {panel}: {', '.join(f'{t:.0f}' for t in times)} ms")
    driver.execute_script(
        "var s = document.getElementById('flow-step'); s.value = 3;"
        "s.dispatchEvent(new Event('input'))"
    )
    # the velocity arrows follow the slider too
    label = driver.find_element("id", "flow-label").text
    assert label == f"t = {TIMES[3]:.1f}"
    assert driver.execute_script("return document.getElementById('flow').data.length") == 2


def test_clicked_point_matches_the_model(driver, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    path, model = pages["nf"]
    open_page(driver, path)
    drag = driver.find_element("css selector", "#density .nsewdrag")
    ActionChains(driver).move_to_element_with_offset(drag, 15, -20).click().perform()
    index = driver.execute_script("return window.flowscopeExplorer.probe")
    assert index is not None, "the click did not pick a point"
    text = driver.find_element("id", "point-which").text
    assert f"probe point #{index}" in text and "nearest precomputed point" in text
    item = driver.execute_script(
        "var E = window.flowscopeExplorer; return E.data.per_class[0].probes.items[E.probe]"
    )
    x = torch.tensor([item["x"]])
    assert item["log_prob"] == pytest.approx(float(model.log_prob(x)[0]), abs=1e-4)
    traj = model.trajectory(x, inverse=True)[:, 0]
    shown = driver.execute_script(
        "var d = document.getElementById('point').data[0]; return [d.x, d.y]"
    )
    assert torch.allclose(torch.tensor(shown).T.double(), traj.double(), atol=1e-4)
    # the table shows log p(x) and terms that add up to it
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#point-terms tr')].map(r => r.innerText)"
    )
    first = float(rows[0].split()[-1])
    total = float(next(r for r in rows if r.startswith("sum")).split()[-1])
    assert first == pytest.approx(float(model.log_prob(x)[0]), abs=1e-4)
    assert total == pytest.approx(first, abs=1e-4)


def test_class_selector_changes_every_panel(driver, pages):
    from selenium.webdriver.support.ui import Select

    path, _ = pages["cfm"]
    open_page(driver, path)
    panels = {"flow": "x", "inverse": "x", "density": "z", "densities": "z", "dt": "x"}
    before = {p: plot_data(driver, p, 0, k) for p, k in panels.items()}
    Select(driver.find_element("id", "class-select")).select_by_index(2)
    after = {p: plot_data(driver, p, 0, k) for p, k in panels.items()}
    for p in panels:
        assert before[p] != after[p], p
    before_dt = plot_data(driver, "dt")
    Select(driver.find_element("id", "dt-select")).select_by_index(4)
    assert plot_data(driver, "dt") != before_dt
    title = driver.execute_script("return document.getElementById('dt').layout.title.text")
    assert title.endswith(str(DTS[4]))
    assert json.loads(json.dumps(driver.get_log("browser"))) == []


def test_the_report_links_the_explorer_pages_of_its_models(tmp_path):
    from types import SimpleNamespace

    from flowscope.report.build import write_explorers
    from flowscope.report.presets import PRESETS

    for name in ("nf", "fm", "cfm"):
        shutil.copytree(FIXTURES / name, tmp_path / "models" / name)
    html = tmp_path / "report.html"
    html.write_text("<html><body><h1>r</h1><nav><ul></ul></nav><p>text</p></body></html>")
    write_explorers(SimpleNamespace(out=tmp_path, preset=PRESETS["smoke"]), html)
    text = html.read_text()
    for name in ("nf", "fm", "cfm"):
        assert f'href="explore_{name}.html"' in text
        assert (tmp_path / f"explore_{name}.html").stat().st_size > 1_000_000
    assert text.endswith("<nav><ul></ul></nav><p>text</p></body></html>")


@pytest.mark.slow
def test_the_page_draws_its_plots_in_firefox(pages, tmp_path):
    """Firefox has no driver here (geckodriver is not packaged), so the check is its own
    headless screenshot: a page whose script failed shows headings and empty panels
    (a few hundred colours), a drawn one its heatmaps and clouds (thousands)."""
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if firefox is None:
        pytest.fail(
            "the Firefox check needs firefox: `apt-get install -y firefox-esr` (Debian; "
            ".ci/run installs it)"
        )
    from PIL import Image

    for name, (path, _) in pages.items():
        shot = tmp_path / f"{name}.png"
        profile = tmp_path / f"profile-{name}"
        profile.mkdir()
        subprocess.run(
            [firefox, "--headless", "--no-remote", "--profile", str(profile)]
            + ["--window-size", "1400,1000", "--screenshot", str(shot), path.as_uri()],
            check=True,
            capture_output=True,
            timeout=180,
        )
        colours = len(Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24))
        assert colours > 2000, (name, colours)


def test_named_points_are_exact_and_listed_in_the_page(driver, tmp_path):
    model, _ = load_run(FIXTURES / "nf")
    points = [("A", (-0.7071, 0.7071)), ("E", (2.0, 2.5))]
    data = explorer_data(model, **SMALL, points=points)
    items = data["per_class"][0]["probes"]["items"]
    named = [p for p in items if "name" in p]
    assert [p["name"] for p in named] == ["A", "E"]
    expected = model.log_prob(torch.tensor([xy for _, xy in points]))
    for p, (_, xy), lp in zip(named, points, expected, strict=True):
        assert p["x"] == pytest.approx(list(xy), abs=1e-6)
        assert p["log_prob"] == pytest.approx(float(lp), abs=1e-4)
    path = write_explorer(model, tmp_path / "nf.html", **SMALL, points=points)
    open_page(driver, path)
    options = driver.execute_script(
        "return [...document.querySelectorAll('#point-select option')].map(o => o.value)"
    )
    assert options == ["", "A", "E"]
    i = driver.execute_script("return flowscopeExplorer.pickNamed('E')")
    assert items[i]["name"] == "E"
    text = driver.find_element("id", "point-which").text
    assert text.startswith("Showing point E at x = (2.0000, 2.5000).")
    with pytest.raises(ValueError, match="points: row 0"):
        explorer_data(model, **SMALL, points=[("far", (math.nan, 0.0))])
    # Finite, but so far that its log-density overflows: the page could not hold it (it
    # was JSON's "Out of range float values are not JSON compliant").
    with pytest.raises(ValueError, match=r"point 'far' at \(1e\+30, 1e\+30\) is so far"):
        explorer_data(model, **SMALL, points=[("A", (0.0, 0.0)), ("far", (1e30, 1e30))])
    # A finite log-density is not enough: every number the page shows must be (a trial's
    # flow at (1e10, 1e10) had a finite log p and an infinite state).
    item = {"x": [1e10, 1e10], "z": [1.0, 2.0], "log_prob": -1e33, "terms": [["t", -1e33]]}
    item.update(trajectory=[[1e10, 1e10], [math.inf, 0.0]], name="(1e+10, 1e+10)")
    with pytest.raises(ValueError, match=r"the point \(1e\+10, 1e\+10\) is so far"):
        flowscope.explore._check_finite_item(item, torch.float32)


def test_a_model_with_label_dropout_gets_a_guidance_slider(driver, tmp_path):
    from flowscope.explore import GUIDANCE_SCALES

    torch.manual_seed(0)
    model = MODELS.get("cfm").build(
        features=2, num_classes=2, hidden=16, layers=3, label_dropout=0.1
    )
    for p in model.parameters():  # a model whose classes differ
        p.data.add_(0.3 * torch.randn_like(p))
    data = explorer_data(model, **SMALL)
    guided = data["per_class"][0]["guided"]
    assert [g["w"] for g in guided] == list(GUIDANCE_SCALES)
    one = guided[GUIDANCE_SCALES.index(1.0)]["points"]
    plain = model.sample(
        SMALL["n"] * 2,
        labels=torch.arange(2).repeat_interleave(SMALL["n"]),
        generator=torch.Generator().manual_seed(0),
        dt=0.01,
    )[: SMALL["n"]]
    torch.testing.assert_close(
        torch.tensor(one, dtype=torch.float64), plain.double().T, atol=1e-3, rtol=0
    )
    assert guided[0]["points"] != guided[-1]["points"]
    assert "guided" not in explorer_data(small_model("cfm"), **SMALL)["per_class"][0]
    path = write_explorer(model, tmp_path / "cfg.html", **SMALL)
    open_page(driver, path)
    assert driver.execute_script("return !document.getElementById('guidance-panel').hidden")
    assert driver.execute_script("return flowscopeExplorer.step.guidance") == 2
    before = plot_data(driver, "guidance")
    driver.execute_script(f"flowscopeExplorer.setStep('guidance', {len(GUIDANCE_SCALES) - 1})")
    assert plot_data(driver, "guidance") != before
    assert driver.find_element("id", "guidance-label").text == "w = 5"


def test_panels_of_unlike_scales_fill_their_frame_and_the_rings_keep_equal_aspect(driver, tmp_path):
    """Minutes against tens of minutes (Old Faithful) would be a thin strip at one unit
    length per axis: such panels drop the equal aspect, as the plots do (COMPARABLE_SPANS);
    the rings keep it."""
    g = torch.Generator().manual_seed(0)
    x = torch.stack(
        [3.5 + torch.randn(300, generator=g), 70 + 12 * torch.randn(300, generator=g)], 1
    )
    model = small_model("nf")
    model.fit_standardization(x)
    rings, _ = load_run(FIXTURES / "nf")
    anchors = {}
    for name, m, data in (("unlike", model, x), ("rings", rings, None)):
        path = write_explorer(m, tmp_path / f"{name}.html", data, **SMALL)
        open_page(driver, path)
        anchors[name] = driver.execute_script(
            "return ['flow', 'inverse', 'density'].map("
            "id => document.getElementById(id).layout.yaxis.scaleanchor || null)"
        )
    assert anchors == {"unlike": [None, None, None], "rings": ["x", "x", "x"]}
