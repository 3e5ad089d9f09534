"""What the web console promises, shown in a real browser against the real stack.

- Sign-in with a Kubernetes token; a bad token is refused and nothing is shown.
- The Task list shows the Tasks with their schedule in words and their next runs.
- A Task's timeline plot gains points as the Task fires, without a reload.
- Trigger from the page produces a run (in the history table and in MySQL); suspend and resume
  change the Task; cancel from a run's page ends the run ``cancelled``.
- A caller whose Role lacks the ``trigger`` verb sees the action refused, and no run is made.
- Executors show their pods' health, and the leader and its epoch are shown.
- Assets: the page names versioned assets served immutable, everything under a strict CSP
  (no page in these tests reports a CSP violation or a script error: see ``tab``).
"""

from __future__ import annotations

import json
import re
import urllib.request
from html.parser import HTMLParser

import pytest
from playwright.sync_api import expect

from cadenza import console
from tests.console.conftest import Stack, Tab
from tests.support import wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]


def task_json(stack: Stack, name: str) -> dict[str, object]:
    out = stack.scene.plane.kubectl("get", "task", name, "-n", stack.namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def test_a_bad_token_is_refused_and_nothing_is_shown(tab: Tab) -> None:
    tab.sign_in("not-a-kubernetes-token")
    expect(tab.page.locator("#sign-in-error")).to_contain_text("refused")
    expect(tab.page.locator("#view")).to_be_hidden()
    expect(tab.page.locator("#task-table")).to_have_count(0)


def test_the_task_list_shows_the_tasks_with_their_next_runs(tab: Tab, stack: Stack) -> None:
    tab.sign_in(stack.tokens["admin"])
    row = tab.page.locator('#task-table tr[data-task="every-ten"]')
    expect(row).to_contain_text("*/10 * * * * *")
    expect(row).to_contain_text("Every 10 seconds")
    expect(row).to_contain_text("Europe/Berlin")
    next_runs = row.locator(".next-runs div")
    expect(next_runs).to_have_count(3)
    expect(next_runs.first).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d0$"))
    # The sleeper is suspended: no next runs, and the state filter finds it alone.
    expect(tab.page.locator('tr[data-task="sleeper"] .next-runs div')).to_have_count(0)
    tab.page.select_option("select[name=state]", "suspended")
    tab.page.click("#task-filters button[type=submit]")
    expect(tab.page.locator("#task-table tbody tr")).to_have_count(1)
    expect(tab.page.locator('#task-table tr[data-task="sleeper"]')).to_have_count(1)
    # Every namespace (the admin's Role is cluster-wide): the same Task, by its namespace.
    tab.page.check("input[name=allNamespaces]")
    tab.page.click("#task-filters button[type=submit]")
    expect(tab.page).to_have_url(re.compile(r"allNamespaces=true"))
    expect(tab.page.locator('#task-table tr[data-task="sleeper"]')).to_contain_text(stack.namespace)


def test_a_tasks_plot_gains_points_as_it_fires(tab: Tab, stack: Stack) -> None:
    tab.sign_in(stack.tokens["admin"])
    tab.open(f"#/task/{stack.namespace}/every-second")
    plot = tab.page.locator("#timeline")
    expect(plot.locator("canvas")).to_have_count(1)
    expect(plot).not_to_have_attribute("data-points", "0")
    first = int(plot.get_attribute("data-points") or 0)
    wait_for(
        lambda: int(plot.get_attribute("data-points") or 0) >= first + 2,
        30,
        "the plot to gain points while the page stays open",
    )
    expect(tab.page.locator("#history-table tbody tr").first).to_contain_text("schedule")
    expect(tab.page.locator("#task-summary")).to_contain_text("Every second")


def test_trigger_suspend_resume_and_cancel_from_the_pages(tab: Tab, stack: Stack) -> None:
    tab.sign_in(stack.tokens["admin"])
    tab.open(f"#/task/{stack.namespace}/sleeper")
    expect(tab.page.locator("#suspend")).to_have_text("Resume")
    tab.page.click("#trigger")
    result = tab.page.locator("#action-result")
    expect(result).to_have_text(re.compile(r"^Triggered run #\d+\.$"))
    run_id = int(re.findall(r"\d+", result.inner_text())[0])
    rows = stack.sql("SELECT origin, task_name FROM task_executions WHERE id = %s", run_id)
    assert rows == [{"origin": "manual", "task_name": "sleeper"}]
    expect(tab.page.locator(f'#history-table tr[data-run="{run_id}"]')).to_have_count(1)

    tab.page.click("#suspend")
    expect(result).to_have_text("Resumed.")
    wait_for(lambda: not task_json(stack, "sleeper")["spec"].get("suspend"), 20, "resumed")  # type: ignore[attr-defined]
    expect(tab.page.locator("#suspend")).to_have_text("Suspend")
    tab.page.click("#suspend")
    expect(result).to_have_text("Suspended.")
    assert task_json(stack, "sleeper")["spec"]["suspend"] is True  # type: ignore[index]

    tab.page.click(f'#history-table tr[data-run="{run_id}"] a')
    expect(tab.page.locator("#run")).to_contain_text("sleeper")
    expect(tab.page.locator("#cancel")).to_be_visible()  # the handler sleeps for two minutes
    expect(tab.page.locator("#run")).to_contain_text("running")
    tab.page.click("#cancel")
    expect(tab.page.locator("#action-result")).to_contain_text("Cancelled (was running")
    expect(tab.page.locator("#cancel")).to_be_hidden()
    assert stack.sql("SELECT status FROM task_executions WHERE id = %s", run_id) == [
        {"status": "cancelled"}
    ]


def test_a_role_without_the_trigger_verb_sees_the_action_refused(tab: Tab, stack: Stack) -> None:
    before = stack.sql("SELECT COUNT(*) AS n FROM task_executions WHERE origin = 'manual'")
    tab.sign_in(stack.tokens["viewer"])
    tab.open(f"#/task/{stack.namespace}/every-ten")
    expect(tab.page.locator("#task-summary")).to_contain_text("Every 10 seconds")
    tab.page.click("#trigger")
    result = tab.page.locator("#action-result")
    expect(result).to_contain_text("Trigger refused:")
    expect(result).to_contain_text("trigger")
    tab.page.click("#suspend")
    expect(result).to_contain_text("Suspend refused:")
    after = stack.sql("SELECT COUNT(*) AS n FROM task_executions WHERE origin = 'manual'")
    assert after == before
    assert not task_json(stack, "every-ten")["spec"].get("suspend")  # type: ignore[attr-defined]


def test_executors_show_pod_health_and_the_leader(tab: Tab, stack: Stack) -> None:
    tab.sign_in(stack.tokens["admin"])
    tab.open("#/executors")
    pool = tab.page.locator('section[data-executor="pool"]')
    expect(pool).to_contain_text("2 of 2 healthy")
    expect(pool.locator("tr[data-pod]")).to_have_count(2)
    expect(pool.locator("tr[data-pod]").first).to_contain_text("healthy")
    leader = stack.scene.replicas.members[0].instance_id
    expect(tab.page.locator("#leader")).to_have_text(re.compile(rf"^Leader: {leader}, epoch \d+"))
    expect(tab.page.locator(f'tr[data-replica="{leader}"]')).to_contain_text("leader")


def test_signing_out_forgets_the_token(tab: Tab, stack: Stack) -> None:
    tab.sign_in(stack.tokens["admin"])
    expect(tab.page.locator("#task-table")).to_be_visible()
    tab.page.click("#sign-out")
    expect(tab.page.locator("#sign-in")).to_be_visible()
    assert tab.page.evaluate("sessionStorage.length") == 0
    tab.page.reload()
    expect(tab.page.locator("#sign-in")).to_be_visible()


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str | None] = []
        self.inline_handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.sources.append(found.get("src"))
        self.inline_handlers += [name for name in found if name.startswith("on")]
        if "style" in found:
            self.inline_handlers.append("style")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_page_and_assets_are_cached_correctly_under_a_strict_csp(stack: Stack) -> None:
    status, headers, body = fetch(f"{stack.url}/console/")
    assert status == 200
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Content-Security-Policy"] == console.CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in headers["Content-Security-Policy"]
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    scripts = _Scripts()
    scripts.feed(body.decode())
    assert scripts.sources and all(scripts.sources), "no inline script"
    assert scripts.inline_handlers == []

    asset = next(s for s in scripts.sources if s and "console.js" in s)
    status, headers, _ = fetch(f"{stack.url}{asset}")
    assert status == 200
    assert headers["Cache-Control"] == console.IMMUTABLE
    assert headers["Content-Type"].startswith("text/javascript")
    status, _, _ = fetch(f"{stack.url}{asset}", {"If-None-Match": headers["ETag"]})
    assert status == 304
    # An old or missing version revalidates instead of being pinned for a year.
    status, headers, _ = fetch(f"{stack.url}/console/static/console.js?v=0")
    assert (status, headers["Cache-Control"]) == (200, "no-cache")
    status, _, _ = fetch(f"{stack.url}/console/static/../../api/v1/tasks")
    assert status == 404
    status, headers, _ = fetch(f"{stack.url}/console/static/missing.js")
    assert status == 404
    assert "Content-Security-Policy" in headers
