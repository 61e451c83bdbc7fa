"""The console walked in headless Chromium over WebDriver (selenium), for api/tests/console.rs.

It signs in as a customer (refused), as support (search, timeline with the `<script>` shipping
name shown as text, refund, failed notifications, no admin pages), as an admin (a projection
rebuild followed to its end by the page's script, the catalog) and as an analyst (events, the
NDJSON link, time travel), asserting what each page shows and saving a screenshot of each.

With the argument `oidc`, it signs in through the OpenID provider instead (the server is
configured with one, and the provider signs in `sam`, support, at once), and resends the
order's notification that failed.

Environment: CONSOLE_BASE, CHROMEDRIVER_URL, SCREENSHOTS; ORDER_ID, SCRIPT_NAME and
CUSTOMER_TOKEN, SUPPORT_TOKEN, ADMIN_TOKEN, ANALYST_TOKEN; or, for `oidc`, ISSUER, ORDER_ID and
NOTIFICATION_ID.
"""

import os
import sys
import time
import urllib.parse
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By

BASE = os.environ["CONSOLE_BASE"]
SHOTS = Path(os.environ["SCREENSHOTS"])
ORDER = os.environ.get("ORDER_ID", "")
SCRIPT_NAME = os.environ.get("SCRIPT_NAME", "")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Remote(command_executor=os.environ["CHROMEDRIVER_URL"], options=options)


def step(what):
    print(f"- {what}", flush=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def text(d):
    return d.find_element(By.TAG_NAME, "body").text


def shot(d, name):
    d.save_screenshot(str(SHOTS / f"{name}.png"))


def until(d, predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    shot(d, "failed-" + what.replace(" ", "-"))
    raise AssertionError(f"timed out waiting for {what}; the page says:\n{text(d)}")


def go(d, element):
    """Clicks a link or a form's button and waits for the next page."""
    old = d.find_element(By.TAG_NAME, "html")
    element.click()

    def gone():
        try:
            old.tag_name
            return False
        except WebDriverException:  # stale, or its document is being replaced
            return True

    until(d, gone, "the next page")


def until_url(d, path):
    until(d, lambda: urllib.parse.urlparse(d.current_url).path == path, f"the page {path}")


def no_script_ran(d):
    """Nothing but the console's own script is on the page, and no alert opened."""
    try:
        d.switch_to.alert
        raise AssertionError("an alert opened: a script from the data ran")
    except NoAlertPresentException:
        pass
    sources = [s.get_attribute("src") for s in d.find_elements(By.TAG_NAME, "script")]
    check(sources == [f"{BASE}/console/assets/console.js"], f"unexpected scripts: {sources}")


def sign_in(d, token):
    d.get(f"{BASE}/console/sign-in")
    d.find_element(By.NAME, "token").send_keys(token)
    go(d, d.find_element(By.CSS_SELECTOR, "main form button"))


def sign_out(d):
    d.get(f"{BASE}/console")
    go(d, d.find_element(By.CSS_SELECTOR, "header form button"))
    until_url(d, "/console/sign-in")
    d.get(f"{BASE}/console")
    until_url(d, "/console/sign-in")  # the console needs a session again


def customer(d):
    step("a customer's token gets no console")
    sign_in(d, os.environ["CUSTOMER_TOKEN"])
    check(d.title.startswith("Forbidden"), f"customer page title {d.title!r}")
    check("Customers have no console" in text(d), text(d))
    check(d.get_cookie("console_session") is None, "a customer's token is never kept")
    shot(d, "customer-refused")


def support(d):
    step("support signs in and searches")
    sign_in(d, os.environ["SUPPORT_TOKEN"])
    until_url(d, "/console")
    check("sam (support)" in text(d), text(d))
    cookie = d.get_cookie("console_session")
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict", f"session cookie {cookie}")
    go(d, d.find_element(By.LINK_TEXT, "Orders"))
    d.find_element(By.NAME, "email").send_keys("mallory@example.com")
    d.find_element(By.CSS_SELECTOR, "select[name=status] option[value=paid]").click()
    go(d, d.find_element(By.CSS_SELECTOR, "form.search button"))
    rows = d.find_elements(By.CSS_SELECTOR, "#orders tbody tr")
    check(len(rows) == 1, f"{len(rows)} orders for mallory: {text(d)}")
    check(ORDER in rows[0].text and "paid" in rows[0].text, rows[0].text)
    check("email=mallory%40example.com" in d.current_url, d.current_url)
    shot(d, "support-search")

    step("the timeline shows the <script> shipping name as text")
    go(d, d.find_element(By.LINK_TEXT, ORDER))
    check(d.find_element(By.ID, "status").text == "paid", text(d))
    check(SCRIPT_NAME in d.find_element(By.ID, "ship-to").text, text(d))
    check(SCRIPT_NAME in d.page_source.replace("&lt;", "<").replace("&gt;", ">"), "source")
    check(len(d.find_elements(By.CSS_SELECTOR, "#ship-to *:not(br)")) == 0, "markup in the name")
    no_script_ran(d)
    events = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#timeline td.event")]
    check("OrderPlaced" in events, f"timeline events {events}")
    shot(d, "support-timeline")

    step("support refunds the order")
    go(d, d.find_element(By.CSS_SELECTOR, "main form button"))
    check("Refund succeeded" in d.find_element(By.CSS_SELECTOR, ".notice").text, text(d))

    def refunded():
        d.get(f"{BASE}/console/support/orders/{ORDER}")
        return d.find_element(By.ID, "refunded").text != "—" and any(
            "Refund" in e.text for e in d.find_elements(By.CSS_SELECTOR, "#timeline td.event"))

    until(d, refunded, "the refund on the timeline")
    check(d.find_element(By.ID, "status").text == "refunded", text(d))
    no_script_ran(d)
    shot(d, "support-refund")

    step("failed notifications, and no admin pages for support")
    go(d, d.find_element(By.LINK_TEXT, "Failed notifications"))
    check(d.title.startswith("Failed notifications"), d.title)
    shot(d, "support-failed-notifications")
    check("Catalog" not in d.find_element(By.TAG_NAME, "nav").text, "support sees no catalog link")
    for page in ("admin/projections", "admin/catalog", "analyst/events"):
        d.get(f"{BASE}/console/{page}")
        check(d.title.startswith("Forbidden"), f"support opened {page}: {d.title}")
    sign_out(d)


def admin(d):
    step("an admin rebuilds a projection and watches it finish")
    sign_in(d, os.environ["ADMIN_TOKEN"])
    go(d, d.find_element(By.LINK_TEXT, "Projections"))
    rows = d.find_elements(By.CSS_SELECTOR, "#projections tbody tr")
    check(len(rows) >= 3, f"{len(rows)} projections")
    name = rows[0].get_attribute("data-projection")
    go(d, rows[0].find_element(By.TAG_NAME, "button"))
    until_url(d, "/console/admin/projections")

    def cell(field):
        row = d.find_element(By.CSS_SELECTOR, f'#projections tr[data-projection="{name}"]')
        return row.find_element(By.CSS_SELECTOR, f'[data-field="{field}"]').text

    until(d, lambda: cell("rebuild").startswith("done "), f"the rebuild of {name}")
    until(d, lambda: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-polls") or 0) >= 1,
          "the page's script to poll")
    position, head = cell("rebuild").removeprefix("done ").split("/")
    check(int(position) >= int(head) > 0, f"rebuild progress {cell('rebuild')}")
    check(cell("healthy") == "true", f"{name} healthy: {cell('healthy')}")
    check("Notifications given up on" in text(d), text(d))
    shot(d, "admin-projections")

    step("the admin creates, restocks, reprices and retires a product")
    go(d, d.find_element(By.LINK_TEXT, "Catalog"))
    check("prd_espresso" in text(d), text(d))
    create = d.find_element(By.XPATH, "//form[.//input[@name='product_id']]")
    for name, value in (("product_id", "prd_console_kettle"), ("name", "Console kettle"),
                        ("category", "tea"), ("amount", "9.90"), ("currency", "EUR"),
                        ("quantity", "0")):
        field = create.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    go(d, create.find_element(By.TAG_NAME, "button"))
    check("Product created." in text(d), text(d))
    check("Console kettle" in d.find_element(By.ID, "products").text, text(d))
    shot(d, "admin-catalog")
    go(d, d.find_element(By.LINK_TEXT, "prd_console_kettle"))
    check(d.find_element(By.ID, "on-hand").text == "0", text(d))

    def act(action, **fields):
        form = d.find_element(By.XPATH, f"//form[input[@name='action' and @value='{action}']]")
        for name, value in fields.items():
            field = form.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        go(d, form.find_element(By.TAG_NAME, "button"))

    act("restock", quantity="5")
    check("Restocked." in text(d), text(d))
    check(d.find_element(By.ID, "on-hand").text == "5", text(d))
    act("reprice", amount="12.50")
    check(d.find_element(By.ID, "price").text == "12.50 EUR", text(d))
    act("retire")
    check(d.find_element(By.ID, "product-status").text == "retired", text(d))
    shot(d, "admin-product")
    sign_out(d)


def analyst(d):
    step("an analyst browses the order's events and travels in time")
    sign_in(d, os.environ["ANALYST_TOKEN"])
    go(d, d.find_element(By.LINK_TEXT, "Events"))
    d.find_element(By.NAME, "stream").send_keys(f"order:{ORDER}")
    go(d, d.find_element(By.CSS_SELECTOR, "form.search button"))
    types = [r.find_elements(By.TAG_NAME, "td")[4].text
             for r in d.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    check(types[0] == "OrderPlaced" and "OrderPaid" in types, f"event types {types}")
    download = d.find_element(By.ID, "download").get_attribute("href")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(download).query)
    check(query == {"stream": [f"order:{ORDER}"]}, f"download link {download}")
    no_script_ran(d)
    shot(d, "analyst-events")
    go(d, d.find_element(By.LINK_TEXT, "1"))
    check(d.find_element(By.ID, "version").text == "1", text(d))
    check("OrderPlaced" in text(d), text(d))
    # Without the pii scope, the shipping name is masked, as in the API.
    check(SCRIPT_NAME not in text(d) and "[masked]" in text(d), text(d))
    no_script_ran(d)
    shot(d, "analyst-time-travel")
    sign_out(d)


def oidc(d):
    step("support signs in through the OpenID provider (authorization code with PKCE)")
    d.get(f"{BASE}/console/sign-in")
    link = d.find_element(By.ID, "oidc")
    check(link.text == f"Sign in with {os.environ['ISSUER']}", link.text)
    shot(d, "oidc-sign-in")
    go(d, link)
    until_url(d, "/console")
    check("sam (support)" in text(d), text(d))
    cookie = d.get_cookie("console_session")
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict", f"session cookie {cookie}")
    go(d, d.find_element(By.LINK_TEXT, "Orders"))
    check(d.title.startswith("Orders"), d.title)
    shot(d, "oidc-signed-in")

    step("support resends the notification that could not be delivered")
    go(d, d.find_element(By.LINK_TEXT, "Failed notifications"))
    notification = os.environ["NOTIFICATION_ID"]

    def row():
        rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#notifications tbody tr")
                if ORDER in r.text]
        return rows[0] if rows else None

    check(row() is not None, text(d))
    cells = row().find_elements(By.TAG_NAME, "td")
    check(cells[5].text == "1", f"attempts {cells[5].text}")
    form = row().find_element(By.TAG_NAME, "form")
    action = form.get_attribute("action")
    check(action == f"{BASE}/console/support/notifications/{notification}/resend", action)
    go(d, form.find_element(By.TAG_NAME, "button"))
    check("Resend requested" in text(d), text(d))

    def tried_again():
        d.get(f"{BASE}/console/support/notifications")
        again = row()
        return again is not None and again.find_elements(By.TAG_NAME, "td")[5].text == "2"

    until(d, tried_again, "the second attempt")
    d.get(f"{BASE}/console/support/orders/{ORDER}")
    events = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#timeline td.event")]
    check("NotificationResendRequested" in events, f"timeline events {events}")
    shot(d, "support-resend")
    sign_out(d)


def main():
    walks = (oidc,) if sys.argv[1:] == ["oidc"] else (customer, support, admin, analyst)
    d = browser()
    try:
        for walk in walks:
            walk(d)
    except Exception:
        shot(d, "failed")
        print(f"at {d.current_url}:\n{text(d)}", file=sys.stderr)
        raise
    finally:
        d.quit()
    print("ok")


if __name__ == "__main__":
    main()
