#!/usr/bin/env python3
"""Loads a page in headless Chromium over the DevTools protocol (a pipe, no
network port), waits for the load event, and reports what the browser said:
console messages, uncaught exceptions, failed requests, a screenshot.

usage: page_check.py URL SCREENSHOT.png
prints one JSON object: {"loaded": bool, "errors": [...], "tables": N}
exit status 0 when it could run the browser at all.
"""
import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time

url, shot = sys.argv[1], sys.argv[2]
profile = tempfile.mkdtemp(prefix="corral-chromium-")
r_parent, w_child = os.pipe()  # browser writes to fd 4
r_child, w_parent = os.pipe()  # browser reads fd 3
proc = subprocess.Popen(
    [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--user-data-dir=" + profile, "--remote-debugging-pipe",
        "--window-size=1400,900", "about:blank",
    ],
    pass_fds=(3, 4),
    preexec_fn=lambda: (os.dup2(r_child, 3), os.dup2(w_child, 4)),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
os.close(r_child)
os.close(w_child)
out = os.fdopen(w_parent, "wb", buffering=0)
inp = os.fdopen(r_parent, "rb", buffering=0)
buf = b""
next_id = 0


def send(method, params=None, session=None):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    out.write(json.dumps(msg).encode() + b"\0")
    return next_id


def messages(deadline):
    global buf
    while time.time() < deadline:
        while b"\0" in buf:
            raw, buf = buf.split(b"\0", 1)
            yield json.loads(raw)
        ready, _, _ = select.select([inp], [], [], max(0.0, deadline - time.time()))
        if not ready:
            return
        chunk = inp.read(65536)
        if not chunk:
            return
        buf += chunk


errors = []
result = {}


def wait_for(pred, timeout=20):
    for m in messages(time.time() + timeout):
        note(m)
        if pred(m):
            return m
    return None


def note(m):
    meth = m.get("method", "")
    p = m.get("params", {})
    if meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
        errors.append("console." + p["type"] + ": " + json.dumps(p.get("args")))
    elif meth == "Runtime.exceptionThrown":
        errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}).get("text")))
    elif meth == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
        errors.append("log: " + p["entry"].get("text", ""))
    elif meth == "Network.loadingFailed":
        errors.append("request failed: " + p.get("errorText", ""))


try:
    i = send("Target.createTarget", {"url": "about:blank"})
    target = wait_for(lambda m: m.get("id") == i)["result"]["targetId"]
    i = send("Target.attachToTarget", {"targetId": target, "flatten": True})
    session = wait_for(lambda m: m.get("id") == i)["result"]["sessionId"]
    for meth in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
        i = send(meth, session=session)
        wait_for(lambda m, i=i: m.get("id") == i)
    send("Page.navigate", {"url": url}, session=session)
    loaded = wait_for(lambda m: m.get("method") == "Page.loadEventFired") is not None
    time.sleep(0.3)
    for m in messages(time.time() + 0.2):
        note(m)
    i = send(
        "Runtime.evaluate",
        {"expression": "document.querySelectorAll('table').length", "returnByValue": True},
        session=session,
    )
    tables = wait_for(lambda m: m.get("id") == i)["result"]["result"].get("value")
    i = send("Page.captureScreenshot", {"format": "png"}, session=session)
    png = wait_for(lambda m: m.get("id") == i)["result"]["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    result = {"loaded": loaded, "errors": errors, "tables": tables}
finally:
    proc.kill()
    proc.wait()
print(json.dumps(result))
