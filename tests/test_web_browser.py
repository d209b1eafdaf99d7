"""The web app in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) loads each page of the sample lake served by uvicorn,
runs a search, opens a dataset and gets a plot. Skipped where no browser is installed
(``.ci/run`` installs one)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from abo_lake.web.screenshots import find_browser, pages, sample_lake
from abo_lake.web.server import running

pytestmark = pytest.mark.skipif(
    find_browser() is None,
    reason="no chromium/chromedriver on PATH (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, dask_cluster):
    from abo_lake.web.screenshots import browser

    folder = tmp_path_factory.getbasetemp() / "web_sample"  # shared with test_web
    lake = sample_lake(folder, scheduler=dask_cluster.scheduler_address)
    driver = browser()
    driver.set_page_load_timeout(60)
    try:
        with running(lake, base_url="/user/test/proxy/8050") as root:
            yield lake, driver, root
    finally:
        driver.quit()


def _wait(driver, condition, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def test_each_page_loads_in_the_browser(served):
    from selenium.webdriver.common.by import By

    lake, driver, root = served
    rel = lake.release()
    for name, path in pages(lake).items():
        driver.get(root + path)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Traceback" not in body, name
        if name == "error":
            assert "404" in body
            assert "no dataset" in body
            continue
        assert driver.find_element(By.CSS_SELECTOR, "header .brand").text == "abo-lake"
        if name not in ("releases", "diff"):
            pin = driver.find_element(By.ID, "pin").text
            assert rel.name in pin, name
            assert rel.root[:12] in pin, name
        if name.startswith("plot-"):
            img = driver.find_element(By.ID, "plot")
            assert driver.execute_script("return arguments[0].naturalWidth", img) > 300, name


def test_search_open_a_dataset_and_plot_it(served):
    from selenium.webdriver.common.by import By

    lake, driver, root = served
    rel = lake.release()
    driver.get(root + "/")
    driver.find_element(By.LINK_TEXT, rel.name).click()
    _wait(driver, lambda d: rel.pin in d.current_url)
    driver.find_element(By.LINK_TEXT, "units").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "search"))
    box = driver.find_element(By.NAME, "firing_rate")
    box.send_keys("2:10")
    driver.find_element(By.ID, "search-button").click()
    _wait(driver, lambda d: "firing_rate=2" in d.current_url)
    expected = len(rel.units.search(firing_rate=(2, 10)))
    assert driver.find_element(By.CSS_SELECTOR, "#count b").text == str(expected)

    driver.get(root + f"/r/{rel.pin}/t/ophys_experiments")
    driver.find_element(By.CSS_SELECTOR, "a.open").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "plot-dff"))
    assert "/d/ophys/experiment/" in driver.current_url
    assert "lake.release(" in driver.find_element(By.ID, "code").text
    form = driver.find_element(By.ID, "plot-dff")
    form.find_element(By.NAME, "t0").send_keys("10")
    form.find_element(By.NAME, "t1").send_keys("70")
    form.find_element(By.TAG_NAME, "button").click()
    img = _wait(driver, lambda d: d.find_elements(By.ID, "plot"))[0]
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    assert "read" in driver.find_element(By.CSS_SELECTOR, "figcaption").text


def test_diff_form_in_the_browser(served):
    from selenium.webdriver.common.by import By

    _lake, driver, root = served
    driver.get(root + "/")
    driver.find_element(By.CSS_SELECTOR, "#diff-form button").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "bytes-to-fetch"))
    url = unquote(driver.current_url)
    assert "sample.1@" in url
    assert "sample.2@" in url
    assert "removed" in driver.find_element(By.ID, "diff-datasets").text
