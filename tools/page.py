"""The picking page's size and load time, and its screenshot for the README (docs/pick.png).

    python tools/page.py --session SESSION [--screenshot docs/pick.png]

SESSION's latest round is opened in headless Chromium (Debian's chromium and chromium-driver, through Selenium) as a
file and as `styleprefs pick` serves it; the load time is the Navigation Timing loadEventEnd (every candidate
decoded), median of 5 cold loads (cache off). Three candidates are clicked before the screenshot. A phone-sized
window (390 px wide) checks that the grid still shows two candidates a row. Nothing is selected in the session.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from styleprefs.server import Picker, serve
from styleprefs.session import Session


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--disk-cache-size=0"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    return driver


def load_ms(driver: webdriver.Chrome, url: str) -> float:
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd > 0"))
    return driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--session", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    entry = Session.open(args.session, "cpu").state["rounds"][-1]
    folder = args.session / entry["folder"]
    page = folder / "index.html"
    pictures = [folder / name for name in entry["candidates"]]
    picker = Picker(args.session, "cpu")
    server = serve(picker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}{picker.state()['page']}"
    figures = {"candidates": len(pictures), "html_bytes": page.stat().st_size,
               "candidate_bytes": sum(p.stat().st_size for p in pictures)}
    driver = browser(1280, 1100)
    try:
        figures["load_ms_file"] = statistics.median(load_ms(driver, page.resolve().as_uri()) for _ in range(5))
        figures["load_ms_served"] = statistics.median(load_ms(driver, url) for _ in range(5))
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "actions").is_displayed())
        for number in (3, 7, 11):
            cell = driver.find_element(By.CSS_SELECTOR, f'.candidate[data-number="{number}"]')
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)  # clear of the footer
            cell.click()
        driver.execute_script("window.scrollTo(0, 0)")
        figures["command"] = driver.find_element(By.ID, "command").text
        if args.screenshot:
            driver.save_screenshot(str(args.screenshot))
    finally:
        driver.quit()
    phone = browser(390, 844)
    try:
        phone.get(page.resolve().as_uri())
        tops = phone.execute_script("return [...document.querySelectorAll('.candidate')].map(c => c.offsetTop)")
        figures["phone_per_row"] = tops.count(tops[0])
    finally:
        phone.quit()
        server.shutdown()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
