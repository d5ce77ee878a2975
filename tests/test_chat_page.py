"""GET /chat in a real browser: the page speaks ChatKit to POST /chatkit as a user would use it.

Chromium is the system's (Debian's `chromium` package), driven by playwright's Python package;
playwright's own browser downloads are not used. Without Chromium the browser tests skip, unless
TEST_REQUIRE_BROWSER=1 (as in CI), which makes them fail. What the page shows is checked against
what the server holds, through /v1 and /chatkit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import ENGINES, JWT_SECRET

ROOT = Path(__file__).resolve().parents[1]
TOKEN_KEY = "assistants-bridge.chat.token"
WAIT_MS = 20_000
BROWSER_TIME = {"type": "function", "function": {"name": "get_browser_time"}}
TIME_ZONE = "Pacific/Chatham"  # not the machine's, so the answer must come from the page


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _no_browser(reason: str):
    if os.environ.get("TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and TEST_REQUIRE_BROWSER=1 requires the browser tests")
    pytest.skip(f"{reason} (set TEST_REQUIRE_BROWSER=1 to make this a failure)")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        _no_browser("no Chromium found (`apt-get install chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (`pip install -e '.[test]'`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture
def context(browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    made = browser.new_context(timezone_id=TIME_ZONE, viewport={"width": 1100, "height": 760})
    made.set_default_timeout(WAIT_MS)
    yield made
    made.close()


@pytest.fixture
def page(context):
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    assert not problems, f"the page's script failed: {problems}"


def _dev_bridge(start_bridge, monkeypatch, engine="offline", **settings):
    # No key configured: the development secret signs tokens. The real one is a file in the
    # checkout's instance folder; the tests keep theirs in memory.
    monkeypatch.setattr("bridge.auth.development_secret", lambda instance_path: JWT_SECRET)
    return start_bridge(engine, JWT_SECRET_KEY=None, **settings)


@pytest.fixture
def dev_bridge(start_bridge, monkeypatch):
    bridge = _dev_bridge(start_bridge, monkeypatch, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    return bridge


def dev_link(bridge, user: str) -> str:
    """The link `flask token USER --url` prints for this bridge."""
    result = bridge.app.test_cli_runner().invoke(
        args=["token", user, "--url", "--base-url", bridge.url])
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith(f"{bridge.url}/chat#token=")
    return link


def settled(page) -> None:
    """Wait until the page has finished what it was doing (a request, a stream)."""
    from playwright.sync_api import expect

    expect(page.locator("body")).to_have_attribute("data-busy", "false")


def signed_in(page, link: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(link)
    expect(page.get_by_test_id("user-name")).to_have_text(f"Signed in as {user}")
    expect(page.get_by_test_id("thread-list")).to_have_attribute("data-loaded", "true")
    settled(page)


def send(page, text: str) -> None:
    page.get_by_test_id("composer-input").fill(text)
    page.get_by_test_id("composer-input").press("Enter")


def items(page, role: str):
    return page.locator(f'[data-testid="item"][data-role="{role}"] [data-testid="item-text"]')


def v1_threads(bridge, user: str) -> list[dict]:
    answer = httpx.get(bridge.api + "/threads?order=asc&limit=100", headers=bridge.headers(user))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def v1_messages(bridge, user: str, thread_id: str) -> list[tuple[str, str]]:
    answer = httpx.get(f"{bridge.api}/threads/{thread_id}/messages?order=asc",
                       headers=bridge.headers(user))
    assert answer.status_code == 200, answer.text
    return [(message["role"], message["content"][0]["text"]["value"])
            for message in answer.json()["data"]]


def chatkit_thread(bridge, user: str, thread_id: str) -> dict:
    answer = httpx.post(bridge.url + "/chatkit", headers=bridge.headers(user), json={
        "type": "threads.get_by_id", "params": {"thread_id": thread_id}})
    assert answer.status_code == 200, answer.text
    return answer.json()


# Records every text the reply shows, as the page renders it: each change of a reply's text
# puts a new text node in, and a node keeps the text it was added with.
RECORD_REPLY_TEXTS = """() => {
  window.replyTextLengths = [];
  new MutationObserver((records) => {
    for (const record of records) {
      if (!record.target.closest?.('[data-role="assistant"]')) continue;
      for (const node of record.addedNodes) {
        if (node.nodeType === Node.TEXT_NODE) window.replyTextLengths.push(node.data.length);
      }
    }
  }).observe(document.getElementById("items"), { childList: true, subtree: true });
}"""


def test_a_dev_link_signs_in_and_the_reply_streams_in_and_stays(dev_bridge, page, tmp_path):
    from playwright.sync_api import expect

    link = dev_link(dev_bridge, "alice")
    signed_in(page, link, "alice")
    # The token left the address bar and lives in the tab's session storage.
    assert page.url == dev_bridge.url + "/chat"
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == link.split("#token=")[1]
    expect(page.get_by_test_id("thread")).to_have_count(0)
    page.evaluate(RECORD_REPLY_TEXTS)

    send(page, "Hello from a <b>browser</b> & friends")

    expect(items(page, "user")).to_have_text(["Hello from a <b>browser</b> & friends"])
    expect(items(page, "assistant")).to_have_count(1)
    expect(items(page, "assistant")).to_contain_text("Hello from a <b>browser</b> & friends")
    settled(page)
    assert page.locator("[data-testid=items] b").count() == 0  # shown as text, not as markup
    reply = items(page, "assistant").text_content()
    lengths = page.evaluate("window.replyTextLengths")
    assert lengths == sorted(lengths) and lengths[-1] == len(reply), lengths
    assert [n for n in lengths if 0 < n < len(reply)], f"the reply came in one piece: {lengths}"

    (thread,) = v1_threads(dev_bridge, "alice")
    assert v1_messages(dev_bridge, "alice", thread["id"]) == [
        ("user", "Hello from a <b>browser</b> & friends"), ("assistant", reply)]
    listed = page.get_by_test_id("thread")
    expect(listed).to_have_count(1)
    expect(listed).to_have_attribute("data-thread-id", thread["id"])
    expect(listed).to_have_attribute("aria-current", "true")

    page.reload()

    expect(page.get_by_test_id("user-name")).to_have_text("Signed in as alice")
    expect(items(page, "user")).to_have_text(["Hello from a <b>browser</b> & friends"])
    expect(items(page, "assistant")).to_have_text([reply])
    expect(page.get_by_test_id("thread")).to_have_attribute("data-thread-id", thread["id"])
    expect(page.get_by_test_id("thread")).to_have_attribute("aria-current", "true")
    settled(page)
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The second message goes to the same thread.
    send(page, "And once more")
    expect(items(page, "assistant")).to_have_count(2)
    settled(page)
    assert [t["id"] for t in v1_threads(dev_bridge, "alice")] == [thread["id"]]
    assert [role for role, _ in v1_messages(dev_bridge, "alice", thread["id"])] == [
        "user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_conversation_streams_in_on_every_engine(start_bridge, monkeypatch, page, engine):
    from playwright.sync_api import expect

    bridge = _dev_bridge(start_bridge, monkeypatch, engine, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    said = "one two three four five six seven eight nine ten eleven twelve"
    if bridge.fake is not None:
        bridge.fake.enqueue(f"First: {said}", f"Second: {said}")
    signed_in(page, dev_link(bridge, "alice"), "alice")
    page.evaluate(RECORD_REPLY_TEXTS)

    replies = []
    for turn in ("First", "Second"):
        send(page, f"{turn}: {said}")
        expect(items(page, "assistant")).to_have_count(len(replies) + 1)
        settled(page)
        replies.append(items(page, "assistant").nth(len(replies)).text_content())
        assert f"{turn}: {said}" in replies[-1]

    lengths = page.evaluate("window.replyTextLengths")
    assert [n for n in lengths if 0 < n < len(replies[0])], f"no reply streamed: {lengths}"
    (thread,) = v1_threads(bridge, "alice")
    assert v1_messages(bridge, "alice", thread["id"]) == [
        ("user", f"First: {said}"), ("assistant", replies[0]),
        ("user", f"Second: {said}"), ("assistant", replies[1])]
    page.reload()
    expect(items(page, "assistant")).to_have_text(replies)


def test_threads_are_listed_newest_first_renamed_and_deleted(dev_bridge, page):
    from playwright.sync_api import expect

    signed_in(page, dev_link(dev_bridge, "alice"), "alice")
    send(page, "the first thread")
    expect(items(page, "assistant")).to_have_count(1)
    settled(page)
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("items")).to_be_empty()
    send(page, "the second thread")
    expect(items(page, "assistant")).to_have_count(1)
    settled(page)
    first, second = [thread["id"] for thread in v1_threads(dev_bridge, "alice")]
    listed = page.get_by_test_id("thread")
    expect(listed).to_have_count(2)
    assert [listed.nth(n).get_attribute("data-thread-id") for n in range(2)] == [second, first]

    title = "Plans <i>for</i> & after"
    page.get_by_test_id("rename-thread").click()
    page.get_by_test_id("rename-input").fill(title)
    page.get_by_test_id("rename-save").click()

    expect(page.get_by_test_id("thread-title")).to_have_text(title)
    expect(page.locator(f'[data-testid="thread"][data-thread-id="{second}"]')).to_have_text(title)
    settled(page)
    assert chatkit_thread(dev_bridge, "alice", second)["title"] == title

    page.locator(f'[data-testid="thread"][data-thread-id="{first}"]').click()
    expect(items(page, "user")).to_have_text(["the first thread"])
    settled(page)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("delete-thread").click()

    expect(page.get_by_test_id("thread")).to_have_count(1)
    expect(page.get_by_test_id("thread")).to_have_attribute("data-thread-id", second)
    expect(page.get_by_test_id("thread-title")).to_have_text("New thread")
    settled(page)
    assert [thread["id"] for thread in v1_threads(dev_bridge, "alice")] == [second]


def test_another_users_link_shows_only_that_users_threads(dev_bridge, page):
    from playwright.sync_api import expect

    signed_in(page, dev_link(dev_bridge, "alice"), "alice")
    send(page, "alice's secret")
    expect(items(page, "assistant")).to_have_count(1)
    settled(page)

    # Bob's link, opened in the same tab.
    signed_in(page, dev_link(dev_bridge, "bob"), "bob")

    expect(page.get_by_test_id("thread")).to_have_count(0)
    expect(page.get_by_test_id("items")).to_be_empty()
    send(page, "bob's own")
    expect(items(page, "assistant")).to_have_count(1)
    settled(page)
    (bobs,) = v1_threads(dev_bridge, "bob")
    expect(page.get_by_test_id("thread")).to_have_count(1)
    expect(page.get_by_test_id("thread")).to_have_attribute("data-thread-id", bobs["id"])
    assert "alice's secret" not in page.locator("body").inner_text()
    assert len(v1_threads(dev_bridge, "alice")) == 1


def test_the_page_answers_a_client_tool_call_and_streams_the_reply(start_bridge, monkeypatch,
                                                                   page):
    from playwright.sync_api import expect

    bridge = _dev_bridge(start_bridge, monkeypatch, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper", tools=[BROWSER_TIME])
    signed_in(page, dev_link(bridge, "alice"), "alice")

    send(page, "what is get_browser_time now?")

    tool = page.locator('[data-testid="item"][data-role="tool"]')
    expect(tool).to_have_count(1)
    expect(tool).to_have_attribute("data-status", "completed")
    expect(items(page, "assistant")).to_have_count(1)
    expect(items(page, "assistant")).to_contain_text("get_browser_time returned")
    expect(items(page, "assistant")).to_contain_text(TIME_ZONE)
    settled(page)
    expect(page.get_by_test_id("error")).to_be_hidden()
    (thread,) = v1_threads(bridge, "alice")
    messages = v1_messages(bridge, "alice", thread["id"])
    assert [role for role, _ in messages] == ["user", "assistant"]
    assert TIME_ZONE in messages[1][1]
    runs = httpx.get(f"{bridge.api}/threads/{thread['id']}/runs", headers=bridge.headers("alice"))
    (run,) = runs.json()["data"]
    assert run["status"] == "completed"
    shown = json.loads(tool.get_by_test_id("item-text").text_content().split(" → ", 1)[1])
    assert shown["time_zone"] == TIME_ZONE and shown["iso"].endswith("Z")


def test_a_client_tool_the_page_does_not_know_is_answered_with_an_error(start_bridge,
                                                                        monkeypatch, page):
    from playwright.sync_api import expect

    bridge = _dev_bridge(start_bridge, monkeypatch, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper", tools=[{"type": "function",
                                            "function": {"name": "get_moon_phase"}}])
    signed_in(page, dev_link(bridge, "alice"), "alice")

    send(page, "get_moon_phase please")

    expect(page.locator('[data-testid="item"][data-role="tool"]')).to_have_attribute(
        "data-status", "completed")
    expect(items(page, "assistant")).to_contain_text("unknown client tool get_moon_phase")
    settled(page)
    (thread,) = v1_threads(bridge, "alice")
    assert "unknown client tool get_moon_phase" in v1_messages(bridge, "alice", thread["id"])[1][1]


LAUNCH_NOTES = "# Launch notes\n\nThe launch is on Thursday, at the harbour office by the pier."


def test_an_attached_file_is_read_and_the_answer_cites_it(dev_bridge, page, tmp_path):
    from playwright.sync_api import expect

    notes, stray = tmp_path / "notes.md", tmp_path / "stray.txt"
    notes.write_text(LAUNCH_NOTES)
    stray.write_text("Nothing to see here.")
    signed_in(page, dev_link(dev_bridge, "alice"), "alice")

    page.get_by_test_id("attach-input").set_input_files([str(notes), str(stray)])
    drafts = page.get_by_test_id("draft")
    expect(drafts).to_have_count(2)
    settled(page)
    expect(drafts.nth(0)).to_have_attribute("data-status", "ready")
    expect(drafts.nth(1)).to_have_attribute("data-status", "ready")
    # One is taken off again before sending: its attachment goes, and its file.
    page.get_by_role("button", name="Remove stray.txt").click()
    expect(page.get_by_test_id("draft-name")).to_have_text(["notes.md"])
    settled(page)
    files = httpx.get(dev_bridge.api + "/files", headers=dev_bridge.headers("alice")).json()
    (file,) = files["data"]
    assert file["filename"] == "notes.md"

    send(page, "Where is the launch?")

    expect(items(page, "assistant")).to_contain_text("harbour office by the pier")
    # The reply cites its source under it, not with /v1's marker in its text.
    expect(items(page, "assistant")).not_to_contain_text("【")
    expect(page.get_by_test_id("item-attachment")).to_have_text(["notes.md"])
    expect(page.get_by_test_id("item-source")).to_have_text(["notes.md"])
    expect(drafts).to_have_count(0)
    settled(page)
    expect(page.get_by_test_id("error")).to_be_hidden()
    (thread,) = v1_threads(dev_bridge, "alice")
    answer = httpx.get(f"{dev_bridge.api}/threads/{thread['id']}/messages?order=asc",
                       headers=dev_bridge.headers("alice"))
    asked, reply = answer.json()["data"]
    assert asked["attachments"] == [{"file_id": file["id"], "tools": [{"type": "file_search"}]}]
    (cited,) = reply["content"][0]["text"]["annotations"]
    assert cited["file_citation"]["file_id"] == file["id"]

    assert "【" in reply["content"][0]["text"]["value"]

    page.reload()

    expect(items(page, "assistant")).to_contain_text("harbour office by the pier")
    expect(items(page, "assistant")).not_to_contain_text("【")
    expect(page.get_by_test_id("item-attachment")).to_have_text(["notes.md"])
    expect(page.get_by_test_id("item-source")).to_have_text(["notes.md"])


def test_a_file_over_the_limit_is_refused_before_it_is_sent(start_bridge, monkeypatch, page,
                                                            tmp_path):
    from playwright.sync_api import expect

    bridge = _dev_bridge(start_bridge, monkeypatch, CHATKIT_ASSISTANT="helper",
                         FILE_MAX_BYTES=16)
    bridge.assistant(name="helper")
    large = tmp_path / "large.txt"
    large.write_text("more than sixteen bytes")
    signed_in(page, dev_link(bridge, "alice"), "alice")

    page.get_by_test_id("attach-input").set_input_files(str(large))

    expect(page.get_by_test_id("error-text")).to_contain_text("large.txt is too large")
    expect(page.get_by_test_id("draft")).to_have_count(0)
    files = httpx.get(bridge.api + "/files", headers=bridge.headers("alice")).json()
    assert files["data"] == []


def test_an_error_event_is_shown_in_the_page(start_bridge, monkeypatch, page):
    from playwright.sync_api import expect

    bridge = _dev_bridge(start_bridge, monkeypatch)  # no assistant answers here
    signed_in(page, dev_link(bridge, "alice"), "alice")

    send(page, "Anyone there?")

    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error-text")).to_contain_text("CHATKIT_ASSISTANT")
    expect(items(page, "assistant")).to_have_count(0)


def test_a_pasted_token_signs_in_and_a_refused_one_is_said_so(dev_bridge, page):
    from playwright.sync_api import expect

    page.goto(dev_bridge.url + "/chat")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    page.get_by_test_id("token-input").fill("not-a-token")
    page.get_by_test_id("sign-in-button").click()
    expect(page.get_by_test_id("sign-in-message")).to_contain_text("Invalid token")

    page.get_by_test_id("token-input").fill(dev_bridge.token("carol"))
    page.get_by_test_id("sign-in-button").click()

    expect(page.get_by_test_id("user-name")).to_have_text("Signed in as carol")
    expect(page.get_by_test_id("chat")).to_be_visible()


def test_with_a_configured_key_a_token_in_the_link_is_ignored(start_bridge, page):
    from playwright.sync_api import expect

    bridge = start_bridge("offline")  # JWT_SECRET_KEY is set
    page.goto(f"{bridge.url}/chat#token={bridge.token('alice')}")

    expect(page.get_by_test_id("sign-in")).to_be_visible()
    expect(page.get_by_test_id("sign-in-message")).to_contain_text("paste a token")
    assert page.url == bridge.url + "/chat"
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


# ---- without a browser -----------------------------------------------------------------------

def test_the_page_signs_in_from_links_only_under_the_development_secret(start_bridge,
                                                                        monkeypatch):
    configured = httpx.get(start_bridge("offline").url + "/chat")
    development = httpx.get(_dev_bridge(start_bridge, monkeypatch).url + "/chat")

    for answer in (configured, development):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert 'data-fragment-sign-in="off"' in configured.text
    assert 'data-fragment-sign-in="on"' in development.text


def test_token_url_refuses_when_a_key_is_configured(start_bridge):
    bridge = start_bridge("offline")  # JWT_SECRET_KEY is set

    result = bridge.app.test_cli_runner().invoke(args=["token", "alice", "--url"])

    assert result.exit_code == 2
    assert "--url works only with the development secret" in result.output
    assert "token=" not in result.output


def test_token_url_uses_the_base_url(start_bridge, monkeypatch):
    bridge = _dev_bridge(start_bridge, monkeypatch)
    runner = bridge.app.test_cli_runner()

    default = runner.invoke(args=["token", "alice", "--url"])
    other = runner.invoke(args=["token", "alice", "--url", "--base-url", "https://chat.example/"])
    wrong = runner.invoke(args=["token", "alice", "--url", "--base-url", "chat.example"])

    assert default.exit_code == 0 and default.stdout.startswith("http://127.0.0.1:8000/chat#token=")
    assert other.exit_code == 0 and other.stdout.startswith("https://chat.example/chat#token=")
    token = other.stdout.strip().split("#token=")[1]
    answer = httpx.get(bridge.api + "/threads", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert wrong.exit_code == 2 and "--base-url" in wrong.output


def test_the_page_is_served_without_loading_the_chatkit_package(tmp_path):
    # /chat is a page and its files: it must not pay for openai-chatkit and the Agents SDK.
    script = f"""
import sys
from bridge import create_app
app = create_app({{"DATABASE_URL": "sqlite:///{tmp_path / 'page.db'}", "JWT_SECRET_KEY": "x" * 40,
                  "RUN_SWEEP_SECONDS": 0, "AUTO_MIGRATE": True}})
client = app.test_client()
for path in ("/chat", "/chat/static/chat.js", "/chat/static/chat.css"):
    assert client.get(path).status_code == 200, path
loaded = [name for name in ("chatkit", "agents", "bridge.chatkit.server") if name in sys.modules]
assert not loaded, loaded
print("lazy")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "lazy" in done.stdout, done.stdout + done.stderr[-3000:]
