"""The page in a real browser: headless Chromium through Selenium, Debian's ``chromium`` and ``chromium-driver``.

Skipped where either, or selenium (``pip install -e ".[browser]"``), is missing; nothing here downloads a browser.
``STYLEPREFS_SCREENSHOT=path.png`` also saves a picture of the page as the browser shows it.
"""

import os
import shutil
import threading
import time

import pytest

from styleprefs.server import Picker, serve
from styleprefs.session import Session
from styleprefs.store import Store
from tests.test_server import COMMANDS_WAIT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[browser]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver (apt-get install "
                                                                  "chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    # Selenium Manager would fetch a driver when it finds none; the system's is named, so it never does.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def click(browser, *numbers: int) -> None:
    for number in numbers:
        browser.find_element(By.CSS_SELECTOR, f'.candidate[data-number="{number}"]').click()


def test_clicking_candidates_shows_the_select_command(browser, one_round):
    browser.get((one_round / "rounds" / "001" / "index.html").as_uri())  # the file itself, no server
    assert browser.find_element(By.ID, "command").is_displayed() is False
    click(browser, 5, 2, 4)
    command = browser.find_element(By.ID, "command").text
    assert command == f"styleprefs select 2 4 5 --session {one_round.resolve()}"
    click(browser, 4)  # again: left out
    assert browser.find_element(By.ID, "command").text.startswith("styleprefs select 2 5 --session")
    pressed = [e.get_attribute("data-number") for e in browser.find_elements(By.CSS_SELECTOR, '[aria-pressed="true"]')]
    assert pressed == ["2", "5"]
    assert browser.find_element(By.ID, "actions").is_displayed() is False  # no server: the command only
    images = browser.execute_script("return [...document.images].map(i => i.naturalWidth)")
    assert len(images) == 6 and all(w > 0 for w in images)


@pytest.fixture
def served(one_round):
    picker = Picker(one_round, "cpu")
    server = serve(picker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield one_round, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def message(browser, contains: str, timeout: float = 60) -> str:
    WebDriverWait(browser, timeout).until(lambda b: contains in b.find_element(By.ID, "message").text)
    return browser.find_element(By.ID, "message").text


def test_use_these_against_pick_records_the_selection(browser, served):
    root, url = served
    browser.get(url)
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "actions").is_displayed())
    click(browser, 1, 3, 6)
    assert browser.find_element(By.ID, "command").text == f"styleprefs select 1 3 6 --session {root.resolve()}"
    if os.environ.get("STYLEPREFS_SCREENSHOT"):
        browser.save_screenshot(os.environ["STYLEPREFS_SCREENSHOT"])
    browser.find_element(By.ID, "use").click()
    assert message(browser, "chose").startswith("Round 1: chose 1 3 6")
    assert Session.open(root, "cpu").state["rounds"][0]["selection"] == [1, 3, 6]
    assert (root / "rounds" / "001" / "picks-1-3-6" / "selection.json").is_file()
    assert browser.find_element(By.ID, "refine").is_enabled()  # the recorded picks can be learned from


def test_use_these_while_another_command_holds_the_lock_says_so_on_the_page(browser, served):
    root, url = served
    browser.get(url)
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "actions").is_displayed())
    click(browser, 2)
    with Store(root).lock():  # as a refine in another terminal holds it
        started = time.perf_counter()
        browser.find_element(By.ID, "use").click()
        text = message(browser, "is locked by", timeout=20)
    assert f"locked by pid {os.getpid()}; try again when it finishes" in text
    assert time.perf_counter() - started < COMMANDS_WAIT  # the server's own short wait, not a command's
    assert Session.open(root, "cpu").state["rounds"][0]["selection"] is None
    assert "error" in browser.find_element(By.ID, "message").get_attribute("class")


def test_a_moved_session_with_an_odd_name_gets_a_command_that_works_in_a_shell(browser, one_round, tmp_path):
    """Opened as a file, the page names the session where it is now, quoted as the shell needs it."""
    import shlex
    moved = tmp_path / "it's a [copy]" / "session"
    shutil.move(one_round, moved)
    browser.get((moved / "rounds" / "001" / "index.html").as_uri())
    click(browser, 6)
    assert browser.find_element(By.ID, "command").text == f"styleprefs select 6 --session {shlex.quote(str(moved))}"
