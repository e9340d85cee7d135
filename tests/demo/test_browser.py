"""The page in a real browser: headless Chromium types a prompt, presses Write, sees the story appear and the
coloured tokens render, then opens the Attention tab and draws a head. Needs Debian's `chromium` and
`chromium-driver` (`make browser-deps`) and selenium (in the [demo] extra); skips, saying so, without them.

Screenshots go to $TINY_DECODER_SCREENSHOTS (e.g. docs/) when set, else into the test's temporary folder;
$TINY_DECODER_DEMO_MODEL serves that model instead of the test's few-step one (for screenshots of a real one).
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from test_app import free_port, load_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless Chromium here (chromium + chromedriver): `make browser-deps` installs them")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [demo] extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # the local driver: nothing is downloaded
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, timeout=60, what="the page"):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


PROMPT = "Lily saw a"  # short: the test model reads 16 tokens


def test_write_and_look_in_a_browser(browser, story_model, tmp_path):
    from selenium.webdriver.common.by import By

    model = os.environ.get("TINY_DECODER_DEMO_MODEL", str(story_model))
    shots = Path(os.environ.get("TINY_DECODER_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    demo = load_app().build_demo([model])
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        prompt = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#prompt textarea"), what="the prompt box")[0]
        prompt.clear()
        prompt.send_keys(PROMPT)
        browser.find_element(By.CSS_SELECTOR, "#write_button").click()
        story = browser.find_element(By.CSS_SELECTOR, "#story textarea")
        wait_for(lambda: len(story.get_attribute("value")) > len(PROMPT), what="streamed text")
        tokens = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#coloured span.tok"), what="coloured tokens")
        colours = {t.value_of_css_property("background-color") for t in tokens}
        assert "rgba(0, 0, 0, 0)" not in colours and len(colours) > 1  # painted, by probability (not one colour)
        assert all(0 <= float(t.get_attribute("data-prob")) <= 1 for t in tokens)
        assert story.get_attribute("value").startswith(PROMPT)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#alternatives table"), what="the top-5 table")
        browser.save_screenshot(str(shots / "demo_write.png"))

        tab = [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == "Attention"][0]
        tab.click()
        wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#attention_button").is_displayed(), what="the Attention tab")
        browser.find_element(By.CSS_SELECTOR, "#attention_button").click()
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#head_plot img, #head_plot svg, #head_plot canvas"),
            what="the attention plot",
        )
        time.sleep(0.5)
        browser.save_screenshot(str(shots / "demo_attention.png"))

        # Chat with a model that has no chat template: a status line says so, nothing is left in an error state
        tab = [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == "Chat"][0]
        tab.click()
        message = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#message textarea"), what="the message box")[0]
        wait_for(lambda: message.is_displayed(), what="the Chat tab")
        message.send_keys("Hello\n")
        status = wait_for(
            lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, "#chat_status") if "no chat template" in e.text],
            what="the chat status line",
        )[0]
        assert "Not sent" in status.text and message.get_attribute("value").strip() == "Hello"
        for elem_id in ("chatbot", "message", "chat_status"):
            box = browser.find_element(By.CSS_SELECTOR, f"#{elem_id}")
            assert "Error" not in box.text and not box.find_elements(By.CSS_SELECTOR, ".error"), elem_id
    finally:
        demo.close()
    assert (shots / "demo_write.png").stat().st_size > 10_000
