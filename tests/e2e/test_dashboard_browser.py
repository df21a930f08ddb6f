"""The dashboard in a real browser: headless Chromium over the DevTools protocol against the
service as a subprocess with imported history. No request may leave 127.0.0.1, the console stays
clean, and every figure shown equals what /api/v1/points and /api/v1/demand answer."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Settings
from open_dsm.demo import import_demo_history
from tests.helpers import ServiceProcess

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OK = "no-fault-detected"
DECIMALS = {"kilowatts": 2, "percent": 1, "minutes": 1}
STALE_AFTER_S = 40  # the meter goes stale this long after the test's last reading


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Park the browser's ends above the fds the child might otherwise collide with.
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

        def wire() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--mute-audio",
                # A page the browser thinks is in the background gets its timers throttled, and
                # the dashboard's 15-second poll is a timer: keep it running as in a visible tab.
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire,
            env={**os.environ, "TZ": "UTC", "LANG": "en_US.UTF-8"},
        )
        for fd in (to_browser_r, from_browser_w, high_r, high_w):
            os.close(fd)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session: str | None = None

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()

    def send(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command (to the attached page when there is one) and wait for its reply."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._next_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method}")
                self._cond.wait(left)
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def open_page(self) -> None:
        """Create a page, attach to it and turn on the domains the test listens to."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.bringToFront")
        self.send("Emulation.setFocusEmulationEnabled", enabled=True)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"page threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> None:
        """Poll a JavaScript condition until it is true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.2)
        raise TimeoutError(f"page never satisfied {expression}")

    def close(self) -> None:
        """Close the browser and wait for it."""
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", timeout_s=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _why_not_stale(tools: DevTools, base: str, log: str) -> str:
    """What the page, its polls, the API and the service said when the page never went stale."""
    page = tools.evaluate(
        "({meter: document.querySelector('[data-point=\"input-power-meter\"]').textContent,"
        " status: document.getElementById('status').textContent,"
        " banner: document.getElementById('banner').hidden ? '' :"
        " document.getElementById('banner').textContent,"
        " updated: document.getElementById('updated').textContent,"
        " visibility: document.visibilityState, now: new Date().toISOString()})"
    )
    polls = [
        e["wallTime"]
        for e in _events(tools, "Network.requestWillBeSent")
        if e["request"]["url"].endswith("/api/v1/points")
    ]
    meter = next(
        p for p in httpx.get(f"{base}/api/v1/points").json() if p["name"] == "input-power-meter"
    )
    return (
        f"the page never showed the meter stale: page {page}; "
        f"points polls at {[datetime.fromtimestamp(t, UTC).isoformat() for t in polls]}; "
        f"API meter {meter['reliability']} updated {meter['updated_at']}; "
        f"service log:\n{log[-4000:]}"
    )


def _events(tools: DevTools, method: str) -> list[dict[str, Any]]:
    return [e["params"] for e in list(tools.events) if e.get("method") == method]


def _shown(tools: DevTools) -> dict[str, Any]:
    return dict(
        tools.evaluate(
            "({points: Object.fromEntries([...document.querySelectorAll('[data-point]')].map("
            "e => [e.dataset.point, {text: e.textContent, at: e.dataset.updatedAt}])),"
            " demand: Object.fromEntries([...document.querySelectorAll('[data-demand]')].map("
            "e => [e.dataset.demand, e.dataset.raw ?? e.textContent]))})"
        )
    )


def _mismatches(
    shown: dict[str, Any], points: list[dict[str, Any]], demand: dict[str, Any]
) -> list[str]:
    """What the page shows that the API does not say right now (empty when all agree)."""
    wrong = []
    by_name = {p["name"]: p for p in points}
    for name, seen in shown["points"].items():
        point = by_name[name]
        text = seen["text"]
        if point["reliability"] != OK:
            # A value that cannot be trusted is shown as its reliability, never as a number.
            if point["reliability"] not in text or any(c.isdigit() for c in text):
                wrong.append(f"{name}: shows {text!r} for {point['reliability']}")
        elif point["object_type"] == "binary-value":
            if text != ("active" if point["present_value"] else "inactive"):
                wrong.append(f"{name}: shows {text!r}, API {point['present_value']}")
        else:
            decimals = DECIMALS.get(point["units"], 2)
            if abs(float(text) - point["present_value"]) > 0.51 * 10**-decimals:
                wrong.append(f"{name}: shows {text!r}, API {point['present_value']}")
    for key, text in shown["demand"].items():
        value: Any = demand
        for part in key.split("."):
            value = value[part]
        missing = "\u2013" if key.endswith("start") else "none"  # an en dash for no time
        expected = missing if value is None else str(value)
        if key.endswith("start") and value is not None:
            same = datetime.fromisoformat(text) == datetime.fromisoformat(value)
        else:
            same = text == expected
        if not same:
            wrong.append(f"demand {key}: shows {text!r}, API {value!r}")
    return wrong


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, timezone="America/Chicago")
    history = import_demo_history(settings, datetime.now(UTC))
    service = ServiceProcess(
        data_dir,
        [
            "--timezone",
            "America/Chicago",
            "--demand-target-kw",
            "21.5",
            "--stale-after-s",
            str(STALE_AFTER_S),
        ],
    )
    started = time.monotonic()
    service.start()
    tools: DevTools | None = None
    try:
        base = service.base_url
        # Forecast against actual from the first minute: the served forecaster is replayed over
        # the imported day, marked replayed, within a minute of start.
        replayed: list[dict[str, Any]] = []
        while time.monotonic() - started < 60 and len(replayed) < 1000:
            items = httpx.get(f"{base}/api/v1/forecast/history", params={"limit": 5000}).json()
            replayed = [e for e in items["items"] if e["replayed"]]
            time.sleep(1)
        assert len(replayed) >= 1000, f"{len(replayed)} replayed forecasts after 60 s"
        # The BAS is writing: live readings make the meter and the demand figures current.
        live = [float(v) for v in history.future_kw[:3]]
        for kw in live:
            assert httpx.post(f"{base}/api/v1/readings", json={"kw": kw}).status_code == 201

        # The forecast log: each entry is the value forecast 60 minutes before its minute.
        logged = httpx.get(f"{base}/api/v1/forecast/history").json()["items"]
        assert logged
        for entry in logged:
            lead = datetime.fromisoformat(entry["at"]) - datetime.fromisoformat(entry["made_at"])
            assert 58 * 60 <= lead.total_seconds() <= 61 * 60, entry
            assert entry["forecaster"] == "mean-2-weeks"
        naive = httpx.get(f"{base}/api/v1/forecast/history", params={"start": "2026-01-01T00:00"})
        assert naive.status_code == 422
        backwards = httpx.get(
            f"{base}/api/v1/forecast/history",
            params={"start": "2026-01-02T00:00Z", "end": "2026-01-01T00:00Z"},
        )
        assert backwards.status_code == 400

        tools = DevTools(tmp_path / "profile")
        tools.open_page()
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1700,
            deviceScaleFactor=1,
            mobile=False,
        )
        tools.send("Page.navigate", url=f"{base}/")
        tools.wait_for(
            "document.body !== null && document.body.dataset.loaded === 'true' && "
            "document.querySelectorAll('#chart-day canvas, #chart-hour canvas, "
            "#chart-month canvas, #chart-ahead canvas').length === 4",
            30,
        )

        # The figures shown are the API's; retry across a snapshot change between the reads.
        wrong: list[str] = ["not compared yet"]
        for _ in range(4):
            shown = _shown(tools)
            points = httpx.get(f"{base}/api/v1/points").json()
            demand = httpx.get(f"{base}/api/v1/demand").json()
            wrong = _mismatches(shown, points, demand)
            if not wrong:
                break
            time.sleep(16)  # the page polls every 15 s
        assert wrong == []
        assert len(shown["points"]) >= 20
        by_name = {p["name"]: p for p in points}
        # Both kinds of display were exercised: a live number and a value shown as a fault.
        assert by_name["input-power-meter"]["reliability"] == OK
        assert abs(float(shown["points"]["input-power-meter"]["text"]) - live[-1]) < 0.01
        assert by_name["model-rsme"]["reliability"] == "no-sensor"  # no model trained
        assert "no-sensor" in shown["points"]["model-rsme"]["text"]

        # The 24-hour chart holds the imported minutes and the replayed forecast line.
        plotted = tools.evaluate("document.getElementById('day-note').textContent")
        measured = int(plotted.split()[0])
        assert 1400 <= measured <= 1441, plotted
        drawn = int(tools.evaluate("document.getElementById('day-note').dataset.replayed"))
        assert drawn >= 1000 and "replayed" in plotted, plotted

        # The month view: the demand charge so far is the imported period's peak x the rate.
        month = httpx.get(f"{base}/api/v1/demand/month").json()
        assert month["billed_peak_kw"] is not None and month["top_intervals"]
        assert month["demand_charge"] == pytest.approx(month["billed_peak_kw"] * 15.0)
        shown_month = tools.evaluate(
            "({charge: document.getElementById('month-charge').textContent,"
            " rows: document.querySelectorAll('#month-top tbody tr').length,"
            " bars: document.querySelectorAll('#chart-month canvas').length,"
            " tz: document.getElementById('site-tz').textContent})"
        )
        assert shown_month["charge"] == f"${month['demand_charge']:,.2f}"
        assert shown_month["rows"] == len(month["top_intervals"])
        assert shown_month["tz"] == "America/Chicago"
        # The billing-period peak point is seeded from the imported minutes of this period.
        peak_point = next(p for p in points if p["name"] == "billing-period-peak")
        assert peak_point["reliability"] == OK
        assert peak_point["present_value"] == pytest.approx(month["billed_peak_kw"])
        # The day-ahead chart is drawn from /forecast/day-ahead.
        ahead = tools.evaluate("document.getElementById('ahead-note').textContent")
        assert "15-minute steps" in ahead, ahead

        ARTIFACTS.mkdir(exist_ok=True)
        shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))

        # A phone: nothing wider than the screen, the demand interval in the first screen.
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=844,
            deviceScaleFactor=1,
            mobile=True,
        )
        time.sleep(1)  # the charts follow the resize
        phone = tools.evaluate(
            "({scroll: document.documentElement.scrollWidth,"
            " client: document.documentElement.clientWidth,"
            " wide: [...document.querySelectorAll('body *')].filter(e =>"
            "   e.getBoundingClientRect().right > document.documentElement.clientWidth + 1"
            "   && !e.closest('.scroll')).map(e => e.tagName + '.' + e.className).slice(0, 5),"
            " demand: document.getElementById('demand-card').getBoundingClientRect().top"
            "   + window.scrollY})"
        )
        assert phone["scroll"] <= phone["client"] == 390, phone
        assert phone["wide"] == [], phone
        assert phone["demand"] < 844, phone
        small = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (ARTIFACTS / "dashboard-390.png").write_bytes(base64.b64decode(small["data"]))
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1700,
            deviceScaleFactor=1,
            mobile=False,
        )

        # The BAS stops writing: the page shows the meter as stale, not as a number, and the
        # derived figures by their reliability, still matching the API.
        try:
            tools.wait_for(
                "document.querySelector('[data-point=\"input-power-meter\"]').textContent"
                ".includes('communication-failure')",
                STALE_AFTER_S + 30,
            )
        except TimeoutError as error:
            raise AssertionError(_why_not_stale(tools, base, service.log())) from error
        assert "stale" in tools.evaluate("document.getElementById('status').textContent")
        for _ in range(4):
            shown = _shown(tools)
            points = httpx.get(f"{base}/api/v1/points").json()
            demand = httpx.get(f"{base}/api/v1/demand").json()
            wrong = _mismatches(shown, points, demand)
            if not wrong:
                break
            time.sleep(16)
        assert wrong == []
        # The notes read as words, not API field names (battery_soc_pct), stale meter and all.
        notes = tools.evaluate(
            "[...document.querySelectorAll('.notes li, #hour-note, #ahead-note, #day-note,"
            ' #dispatch-tuning, [data-dispatch="reliable"]\')].map(e => e.textContent)'
        )
        assert notes and not [n for n in notes if re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", n)]
        assert (
            tools.evaluate("window.openDsm.inWords('battery_soc_pct stale (40 s old): ignored')")
            == "battery state of charge stale (40 s old): ignored"
        )
        assert (
            tools.evaluate("window.openDsm.inWords('ev_charge_permit: withheld')")
            == "EV charge permit: withheld"
        )
        stale = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (ARTIFACTS / "dashboard-stale.png").write_bytes(base64.b64decode(stale["data"]))

        # Nothing went wrong in the page, and nothing was asked of another host.
        errors = [
            e["entry"]["text"]
            for e in _events(tools, "Log.entryAdded")
            if e["entry"]["level"] == "error"
        ]
        errors += [
            str(e["args"])
            for e in _events(tools, "Runtime.consoleAPICalled")
            if e["type"] in ("error", "assert")
        ]
        errors += [str(e["exceptionDetails"]) for e in _events(tools, "Runtime.exceptionThrown")]
        assert errors == []
        urls = [e["request"]["url"] for e in _events(tools, "Network.requestWillBeSent")]
        assert any(u.endswith("/api/v1/points") for u in urls)
        assert any("/api/v1/forecast/history" in u for u in urls)
        foreign = [u for u in urls if not u.startswith((f"{base}/", "data:"))]
        assert foreign == []
        failed = _events(tools, "Network.loadingFailed")
        assert failed == []

        # /docs and /redoc: served by the service, their operations rendered, nothing from
        # another host, no console error.
        tools.events.clear()
        tools.send("Page.navigate", url=f"{base}/docs")
        tools.wait_for("document.querySelectorAll('.opblock').length >= 19", 30)
        assert tools.evaluate(
            "[...document.querySelectorAll('.opblock-summary-operation-id')]"
            ".some(e => e.textContent.trim() === 'list_points')"
        )
        tools.send("Page.navigate", url=f"{base}/redoc")
        tools.wait_for(
            "[...document.querySelectorAll('h2')]"
            ".some(e => e.textContent.includes('BACnet point'))",
            30,
        )
        doc_urls = [e["request"]["url"] for e in _events(tools, "Network.requestWillBeSent")]
        assert any(u.endswith("swagger-ui-bundle.js") for u in doc_urls)
        assert any(u.endswith("redoc.standalone.js") for u in doc_urls)
        assert [u for u in doc_urls if not u.startswith((f"{base}/", "data:", "blob:"))] == []
        doc_errors = [
            e["entry"]["text"]
            for e in _events(tools, "Log.entryAdded")
            if e["entry"]["level"] == "error"
        ]
        doc_errors += [
            str(e["exceptionDetails"]) for e in _events(tools, "Runtime.exceptionThrown")
        ]
        assert doc_errors == []
    finally:
        if tools is not None:
            tools.close()
        service.stop()
