"""Drives the dispatcher's live page in Debian's Chromium with Playwright (tests/live.rs).

    live_page.py steer ADMIN PROFILE_DIR SHOT_DIR
    live_page.py secure ADMIN PROFILE_DIR TOKEN
    live_page.py runs ADMIN PROFILE_DIR JOB_FILE
    live_page.py compare ADMIN PROFILE_DIR

Prints one JSON object of what it saw; tests/live.rs (tests/record.rs for compare) judges
it. Every wait is bounded.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect, sync_playwright

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


def browser(p, profile, **kw):
    ctx = p.chromium.launch_persistent_context(
        profile, executable_path="/usr/bin/chromium", headless=True, args=ARGS, **kw
    )
    ctx.set_default_timeout(WAIT_MS)
    return ctx


def number(page, sel):
    return int(page.text_content(sel).replace(",", ""))


def wait_number(page, sel, pred, limit_s=10.0):
    end = time.monotonic() + limit_s
    while True:
        n = number(page, sel)
        if pred(n) or time.monotonic() > end:
            return n
        page.wait_for_timeout(200)


def steer(admin, profile, shots):
    base = f"http://{admin}"
    seen = {"hosts": set(), "errors": []}
    with sync_playwright() as p:
        ctx = browser(p, profile, viewport={"width": 1280, "height": 900})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("request", lambda r: seen["hosts"].add(r.url.split("/")[2]))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("dialog", lambda d: (seen.setdefault("dialogs", []).append(d.message), d.accept()))
        page.goto(base + "/")
        first = wait_number(page, "#sent", lambda n: n > 0)
        rows_first = page.locator("#endpoints tbody tr").all_text_contents()
        later = wait_number(page, "#sent", lambda n: n > first + 20)
        rows_later = page.locator("#endpoints tbody tr").all_text_contents()

        page.click("#pause")
        expect(page.locator("#state")).to_have_text("paused", timeout=WAIT_MS)
        # Records already handed out still fire, and a frame is up to a second old.
        page.wait_for_timeout(2500)
        paused_at = number(page, "#sent")
        page.wait_for_timeout(2000)
        paused_after = number(page, "#sent")
        page.click("#resume")
        resumed = wait_number(page, "#sent", lambda n: n > paused_after)

        page.select_option("#pace-kind", "speed")
        page.fill("#pace-value", "2")
        page.click("#apply")
        expect(page.locator("#settings")).to_contain_text("speed 2", timeout=WAIT_MS)
        settings = page.text_content("#settings")

        page.fill("#filter", "/b")
        filtered = page.locator("#endpoints tbody tr").all_text_contents()
        page.fill("#filter", "")
        page.screenshot(path=f"{shots}/live-desktop.png", full_page=True)
        phone = ctx.new_page()
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.on("request", lambda r: seen["hosts"].add(r.url.split("/")[2]))
        phone.goto(base + "/")
        wait_number(phone, "#sent", lambda n: n > 0)
        phone.wait_for_timeout(1200)
        phone.screenshot(path=f"{shots}/live-phone.png", full_page=True)
        phone_width = phone.evaluate("document.documentElement.scrollWidth")
        phone.close()

        page.click("#stop")
        expect(page.locator("#state")).to_have_text("stopped", timeout=WAIT_MS)
        stopped = page.text_content("#state")
        ctx.close()
    out = {
        "first": first,
        "later": later,
        "rows_first": rows_first,
        "rows_later": rows_later,
        "paused_at": paused_at,
        "paused_after": paused_after,
        "resumed": resumed,
        "settings": settings,
        "filtered": filtered,
        "phone_width": phone_width,
        "stopped": stopped,
        "dialogs": seen.get("dialogs", []),
        "hosts": sorted(seen["hosts"]),
        "errors": seen["errors"],
    }
    print(json.dumps(out))


ROUTES = ["/job/start", "/job/stop", "/job/config", "/job/pause", "/job/resume", "/shutdown", "/login", "/logout", "/jobs"]


class Attacker(BaseHTTPRequestHandler):
    """Another site: a page whose form posts to the dispatcher when opened."""

    target = ""

    def do_GET(self):
        route = self.path.split("?route=", 1)[-1]
        body = (
            f'<form id="f" method="POST" action="{self.target}{route}">'
            '<input name="token" value="x"><input name="speed" value="9"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def secure(admin, profile, token):
    base = f"http://{admin}"
    out = {"hosts": set()}
    Attacker.target = base
    evil = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    # "localhost" is another site than "127.0.0.1", though both are loopback.
    evil_base = f"http://localhost:{evil.server_address[1]}"
    with sync_playwright() as p:
        ctx = browser(p, profile)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("request", lambda r: out["hosts"].add(r.url.split("/")[2]))
        page.goto(base + "/")
        page.wait_for_selector("#login:not([hidden])")
        out["asked_for_token"] = page.is_visible("#token")
        page.fill("#token", "not-the-token-at-all")
        page.click("#login-button")
        expect(page.locator("#login-error")).not_to_be_empty(timeout=WAIT_MS)
        out["wrong_token"] = page.text_content("#login-error")
        out["room_hidden_after_wrong"] = page.is_hidden("#room")
        page.fill("#token", token)
        page.click("#login-button")
        page.wait_for_selector("#room:not([hidden])")
        expect(page.locator("#job")).not_to_be_empty(timeout=WAIT_MS)
        out["job"] = page.text_content("#job")
        out["state"] = page.text_content("#state")
        cookies = [c for c in ctx.cookies() if c["name"] == "reprise_admin"]
        out["cookie"] = {k: cookies[0][k] for k in ("httpOnly", "sameSite")} if cookies else None
        out["script_sees_cookie"] = "reprise_admin" in page.evaluate("document.cookie")
        # Signed in, the user opens another site, which posts to every route.
        out["cross_site"] = {}
        attack = ctx.new_page()
        for route in ROUTES:
            with attack.expect_response(lambda r, route=route: r.url == base + route) as resp:
                attack.goto(f"{evil_base}/?route={route}")
            out["cross_site"][route] = resp.value.status
        attack.close()
        ctx.close()
    evil.shutdown()
    out["hosts"] = sorted(h for h in out["hosts"])
    print(json.dumps(out))


def runs(admin, profile, job_file):
    """A standing dispatcher's runs: browse, compare two, submit a bad and a good job file."""
    base = f"http://{admin}"
    out = {"hosts": set()}
    with sync_playwright() as p:
        ctx = browser(p, profile, viewport={"width": 1280, "height": 900})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("request", lambda r: out["hosts"].add(r.url.split("/")[2]))
        page.goto(base + "/")
        expect(page.locator("#runs")).to_be_visible()
        expect(page.locator("#jobs tbody tr")).to_have_count(2)
        out["runs"] = page.locator("#jobs tbody tr").all_text_contents()
        out["links"] = page.eval_on_selector_all("#jobs a", "as => as.map(a => a.getAttribute('href'))")
        out["link_status"] = [page.request.get(base + href).status for href in out["links"]]
        page.check("input[name=base][value='1']")
        page.check("input[name=candidate][value='2']")
        page.click("#compare")
        expect(page.locator("#diff tr")).not_to_have_count(0)
        out["diff"] = page.locator("#diff tr").all_text_contents()
        page.fill("#job-file", "[job]\nspeed = -1\n[nonsense]\n")
        page.click("#submit-button")
        expect(page.locator("#submit-out")).to_contain_text("Not queued")
        out["bad"] = page.locator("#submit-out li").all_text_contents()
        page.fill("#job-file", open(job_file).read())
        page.click("#submit-button")
        expect(page.locator("#submit-out")).to_contain_text("Queued as run")
        out["good"] = page.text_content("#submit-out")
        expect(page.locator("#jobs tbody tr")).to_have_count(3)
        page.screenshot(path=job_file + ".png", full_page=True)
        ctx.close()
    out["hosts"] = sorted(out["hosts"])
    print(json.dumps(out))


def compare(admin, profile):
    """A comparing job's page: the diff rates of the job and of the last window, the chart
    of the windows, and the endpoints' window column."""
    out = {"errors": []}
    with sync_playwright() as p:
        ctx = browser(p, profile, viewport={"width": 1280, "height": 900})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("pageerror", lambda e: out["errors"].append(str(e)))
        page.goto(f"http://{admin}/")
        expect(page.locator("#diff-figure")).to_be_visible()
        expect(page.locator("#chart-diff polyline")).not_to_have_count(0)
        out["job"] = page.text_content("#diff")
        out["window"] = page.text_content("#window-diff")
        out["window_label"] = page.text_content("#window-diff-label")
        out["caption"] = page.text_content("#diff-figure figcaption")
        out["points"] = page.eval_on_selector_all(
            "#chart-diff polyline", "ps => ps.map(p => p.getAttribute('points'))"
        )
        out["rows"] = page.locator("#endpoints tbody tr").all_text_contents()
        ctx.close()
    print(json.dumps(out))


if __name__ == "__main__":
    modes = {"steer": steer, "secure": secure, "runs": runs, "compare": compare}
    modes[sys.argv[1]](*sys.argv[2:5])
