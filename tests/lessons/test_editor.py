"""The instructor's editor (/stage/<slug>/edit/), instructor notes, and `lessons export`.

Standing users: alice is staff (an instructor), bob is a student with an account, and an
anonymous browser. Only staff see instructor notes or reach the editor.
"""

from __future__ import annotations

import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load
from visualizer.models import Progress

FIXTURES = Path(__file__).parent / "fixtures"
CONTENT = Path(__file__).resolve().parents[2] / "lessons" / "content"
NOTE = "Labs wait for a free slot."  # the fixture's ```instructor note on step "start"


@pytest.fixture
def lesson(db: None, tmp_path: Path) -> Lesson:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("steps.md", "steps.bg.md"):
        shutil.copy(FIXTURES / name, src / name)
    data, errors = lessons_check([src / "steps.md"])
    assert not errors, errors
    [(row, _)] = lessons_load(lessons=data)
    return row


@pytest.fixture
def alice(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("alice", password="x", is_staff=True))
    return client


@pytest.fixture
def bob(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("bob", password="x"))
    return client


def edit_url(lesson: Lesson) -> str:
    return f"/stage/{lesson.slug}/edit/"


# Instructor notes


def test_instructor_notes_are_shown_to_staff(alice: Client, lesson: Lesson) -> None:
    html = alice.get(f"/stage/{lesson.slug}/").content.decode()
    assert NOTE in html
    assert 'data-testid="instructor-start"' in html
    assert f'href="{edit_url(lesson)}"' in html


@pytest.mark.parametrize("who", ["bob", "anonymous"])
def test_instructor_notes_never_reach_students(who: str, request: pytest.FixtureRequest, lesson: Lesson) -> None:
    client = request.getfixturevalue("bob") if who == "bob" else Client()
    html = client.get(f"/stage/{lesson.slug}/").content.decode()
    assert NOTE not in html  # not in the HTML, nor in the steps' JSON
    assert "instructor" not in html
    assert edit_url(lesson) not in html


def test_instructor_notes_stay_out_of_the_steps_json_even_for_staff(alice: Client, lesson: Lesson) -> None:
    response = alice.get(f"/stage/{lesson.slug}/")
    assert all("instructor_html" not in step for step in response.context["steps_data"]["steps"])


def test_staff_see_the_notes_in_bulgarian_too(alice: Client, lesson: Lesson) -> None:
    alice.cookies["django_language"] = "bg"
    html = alice.get(f"/stage/{lesson.slug}/").content.decode()
    assert NOTE in html  # the translation has no notes of its own: the English ones stand
    assert "Бележки за инструктора" in html


# Access


def test_staff_get_the_editor_with_the_source(alice: Client, lesson: Lesson) -> None:
    response = alice.get(edit_url(lesson))
    assert response.status_code == 200
    assert response.context["source"] == (FIXTURES / "steps.md").read_text(encoding="utf-8")
    assert response.context["translations"] == [("bg", (FIXTURES / "steps.bg.md").read_text(encoding="utf-8"))]
    html = response.content.decode()
    assert 'data-testid="preview"' in html and NOTE in html
    assert f'href="/stage/{lesson.slug}/"' in html  # Try it


@pytest.mark.parametrize("who", ["bob", "anonymous"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_others_are_sent_to_the_admin_login(
    who: str, method: str, request: pytest.FixtureRequest, lesson: Lesson
) -> None:
    client = request.getfixturevalue("bob") if who == "bob" else Client()
    before = Lesson.objects.values().get(pk=lesson.pk)
    response = getattr(client, method)(edit_url(lesson), {"source": "---\n", "save": "1"})
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert Lesson.objects.values().get(pk=lesson.pk) == before


def test_an_unknown_lesson_is_404_for_staff(alice: Client, db: None) -> None:
    assert alice.get("/stage/no-such/edit/").status_code == 404


# Save and preview


def post(client: Client, lesson: Lesson, source: str, *, action: str = "save", bg: str | None = None):
    data = {"source": source, action: "1"}
    data["source_bg"] = lesson.source_translations["bg"] if bg is None else bg
    return client.post(edit_url(lesson), data)


def test_a_broken_edit_shows_the_errors_and_changes_nothing(alice: Client, lesson: Lesson) -> None:
    before = Lesson.objects.values().get(pk=lesson.pk)
    name = lesson.source_path
    broken = lesson.source.replace("metric(totals.rps) > 0 for 3s", "metric(totals.nope) > 0 for 3s")
    response = post(alice, lesson, broken.replace("\n", "\r\n"))  # as a browser's textarea sends it
    assert response.status_code == 200
    [error] = response.context["errors"]
    assert error.startswith(f"{name}:32: steps.start.check: ") and "'totals.nope'" in error, error
    html = response.content.decode()
    assert f"{name}:32: steps.start.check: " in html
    assert "metric(totals.nope)" in response.context["source"]  # the textarea keeps what was sent
    assert "metric(totals.nope) &gt; 0 for 3s" in html
    assert Lesson.objects.values().get(pk=lesson.pk) == before

    response = post(alice, lesson, lesson.source.replace("minutes: 10", "minutes: -1"))
    assert response.context["errors"] == [f"{name}:7: minutes: must be a positive integer, got -1"]
    assert Lesson.objects.values().get(pk=lesson.pk) == before


def test_a_check_nested_300_deep_is_a_syntax_error_not_a_server_error(alice: Client, lesson: Lesson) -> None:
    before = Lesson.objects.values().get(pk=lesson.pk)
    deep = "(" * 300 + "metric(totals.rps) > 0" + ")" * 300
    for action in ("save", "preview"):
        response = post(alice, lesson, lesson.source.replace("metric(totals.rps) > 0 for 3s", deep + " for 3s"),
                        action=action)
        assert response.status_code == 200
        assert response.context["errors"] == [
            f"{lesson.source_path}:32: steps.start.check: parentheses nested more than 20 deep (at '(', column 21)"
        ]
        assert "parentheses nested more than 20 deep" in response.content.decode()
    assert Lesson.objects.values().get(pk=lesson.pk) == before


def test_the_errors_are_the_same_as_lessons_check(alice: Client, lesson: Lesson, tmp_path: Path) -> None:
    broken = lesson.source.replace("## Break it {#break}", "## Break it {#start}")
    response = post(alice, lesson, broken)
    path = Path(lesson.source_path)
    path.write_text(broken, encoding="utf-8")
    _, errors = lessons_check([path])
    assert response.context["errors"] == [str(e) for e in errors] and errors


def test_a_broken_translation_is_reported_under_its_file(alice: Client, lesson: Lesson) -> None:
    bg = lesson.source_translations["bg"].replace("lang: bg", "lang: de")
    response = post(alice, lesson, lesson.source, bg=bg)
    bg_name = str(Path(lesson.source_path).with_name("steps.bg.md"))
    assert f"{bg_name}:3: lang: must be 'bg', as in the file name, got 'de'" in response.context["errors"]


def test_the_id_cannot_change_in_the_editor(alice: Client, lesson: Lesson) -> None:
    response = post(alice, lesson, lesson.source.replace("id: fixture-steps", "id: other"))
    assert response.context["errors"] == [
        f"{lesson.source_path}:2: id: must stay 'fixture-steps': the id keys students' progress"
    ]
    assert not Lesson.objects.filter(slug="other").exists()


def test_a_valid_edit_saves_and_keeps_progress(alice: Client, lesson: Lesson) -> None:
    Progress.objects.create(session_key="s1", lesson=lesson, step_id="start", passed_at=timezone.now(), seconds=3)
    Progress.objects.create(session_key="s1", lesson=lesson, step_id="break", passed_at=timezone.now(), seconds=9)
    edited = lesson.source.replace("title: Steps and checks", "title: Steps, edited").replace(
        "Press **Start**.", "Press **Start** now."
    )
    response = post(alice, lesson, edited.replace("\n", "\r\n"))
    assert response.status_code == 200
    assert response.context["errors"] == [] and response.context["saved"]
    row = Lesson.objects.get(pk=lesson.pk)
    assert row.title == "Steps, edited"
    assert row.source == edited  # LF, as in git
    assert "now." in row.i18n["en"]["steps"]["start"]["html"]
    assert [s["id"] for s in row.steps] == ["start", "break", "read"]
    assert sorted(Progress.objects.filter(lesson=row).values_list("step_id", flat=True)) == ["break", "start"]
    assert "Steps, edited" in alice.get(f"/stage/{lesson.slug}/").content.decode()


def test_preview_renders_without_saving(alice: Client, lesson: Lesson) -> None:
    before = Lesson.objects.values().get(pk=lesson.pk)
    response = post(alice, lesson, lesson.source.replace("title: Steps and checks", "title: Only a preview"),
                    action="preview")
    assert response.status_code == 200 and not response.context["saved"]
    assert "<h1>Only a preview</h1>" in response.content.decode()
    assert Lesson.objects.values().get(pk=lesson.pk) == before


def test_script_and_onerror_in_a_saved_lesson_render_inert(alice: Client, bob: Client, lesson: Lesson) -> None:
    hostile = (
        lesson.source.replace("The intro, before any step.",
                              'The intro <script>alert("intro")</script> <img src="x" onerror="alert(1)">.')
        .replace("Press **Start**.", 'Press <a href="javascript:alert(2)" onclick="alert(3)">Start</a>.')
        .replace(NOTE, '<script>alert("note")</script><img src=x onerror=alert(4)>')
    )
    response = post(alice, lesson, hostile)
    assert response.context["saved"], response.context["errors"]
    for client in (alice, bob, Client()):
        html = client.get(f"/stage/{lesson.slug}/").content.decode()
        assert "alert" not in html
        assert "onerror" not in html.lower() and "onclick" not in html.lower()
        assert "<script>" not in html  # the page's own scripts all have a src
    preview = post(alice, lesson, hostile, action="preview").content.decode()
    body = preview.split('data-testid="preview"', 1)[1]
    assert "<script" not in body and "onerror" not in body and "alert" not in body


# Heading ids


def page_ids(html: str) -> list[str]:
    return re.findall(r'\sid="([^"]*)"', html)


def test_headings_named_steps_lab_and_progress_leave_every_id_on_the_page_unique(
    alice: Client, bob: Client, lesson: Lesson
) -> None:
    # The fixture's intro is "# Steps"; a step now has "Lab" and "Progress" too, and links to the first.
    edited = lesson.source.replace(
        "Press **Start**.", "Press **Start**, then read [the steps](#steps).\n\n### Lab\n\n### Progress\n"
    )
    assert post(alice, lesson, edited).context["saved"]
    for client in (alice, bob, Client()):
        html = client.get(f"/stage/{lesson.slug}/").content.decode()
        ids = page_ids(html)
        assert sorted(i for i in set(ids) if ids.count(i) > 1) == []
        assert {"steps", "lab", "progress"} <= set(ids)  # the page's own
        assert {"lesson-steps", "lesson-lab", "lesson-progress"} <= set(ids)  # the lesson's
        assert 'href="#lesson-steps"' in html  # the in-lesson link follows its heading


def test_no_heading_can_take_an_id_of_the_page(alice: Client, bob: Client, lesson: Lesson) -> None:
    url = f"/stage/{lesson.slug}/"
    pages = [alice.get(url), alice.get(edit_url(lesson))]
    own = {i for page in pages for i in page_ids(page.content.decode()) if not i.startswith("lesson-")}
    # Each of the page's ids as a heading's text (the intro), a {#id} (a step) and raw HTML (another step).
    hostile = (
        lesson.source.replace("The intro, before any step.", "".join(f"\n### {i}\n" for i in sorted(own)))
        .replace("Press **Start**.", "".join(f"\n### Also {{#{i}}}\n" for i in sorted(own)))
        .replace("Kill the web server.", "".join(f'\n<h4 id="{i}">raw</h4>\n' for i in sorted(own)))
    )
    assert post(alice, lesson, hostile).context["saved"]
    for client in (alice, bob, Client()):
        ids = page_ids(client.get(url).content.decode())
        assert [i for i in own if ids.count(i) > 1] == []
        assert {"lesson-steps", "lesson-lab", "lesson-progress"} <= set(ids)  # the headings are there
        assert all(i.startswith("lesson-") for i in ids if i not in own)
    ids = page_ids(post(alice, lesson, hostile, action="preview").content.decode())
    assert [i for i in own if ids.count(i) > 1] == []


# Export


def test_export_round_trip(alice: Client, lesson: Lesson, tmp_path: Path) -> None:
    edited = lesson.source.replace("title: Steps and checks", "title: Steps, edited in the browser")
    assert post(alice, lesson, edited).context["saved"]
    out = tmp_path / "exported"
    stdout = StringIO()
    call_command("lessons", "export", "--to", str(out), "fixture-steps", stdout=stdout)
    assert sorted(p.name for p in out.iterdir()) == ["steps.bg.md", "steps.md"]
    assert (out / "steps.md").read_text(encoding="utf-8") == edited
    assert (out / "steps.bg.md").read_text(encoding="utf-8") == (FIXTURES / "steps.bg.md").read_text(encoding="utf-8")
    call_command("lessons", "check", str(out), stdout=StringIO())
    data, errors = lessons_check([out])
    assert not errors
    row = Lesson.objects.get(pk=lesson.pk)
    [again] = data
    assert (again.title, again.steps, again.i18n, again.source) == (row.title, row.steps, row.i18n, row.source)


def test_export_of_the_shipped_lessons_is_byte_identical(db: None, tmp_path: Path) -> None:
    call_command("lessons", "load", str(CONTENT), stdout=StringIO())
    call_command("lessons", "export", "--to", str(tmp_path), stdout=StringIO())
    shipped = sorted(p.name for p in CONTENT.glob("*.md"))
    assert sorted(p.name for p in tmp_path.iterdir()) == shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (CONTENT / name).read_bytes(), name


def test_export_names_unknown_ids(db: None, tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such lesson: nope"):
        call_command("lessons", "export", "--to", str(tmp_path), "nope")


def test_loading_the_files_keeps_an_edit_that_was_not_exported(alice: Client, lesson: Lesson) -> None:
    """`make run` loads the lessons at every start: it must not overwrite an instructor's edit."""
    src = Path(lesson.source_path).parent
    edited = lesson.source.replace("title: Steps and checks", "title: Steps, edited in the browser")
    assert post(alice, lesson, edited).context["saved"]
    err = StringIO()
    call_command("lessons", "load", str(src / "steps.md"), stdout=StringIO(), stderr=err)
    assert "kept fixture-steps: edited in the browser and not exported" in err.getvalue()
    assert Lesson.objects.get(pk=lesson.pk).title == "Steps, edited in the browser"

    call_command("lessons", "load", "--force", str(src / "steps.md"), stdout=StringIO(), stderr=StringIO())
    assert Lesson.objects.get(pk=lesson.pk).title == "Steps and checks"


def test_after_export_loading_updates_the_row_again(alice: Client, lesson: Lesson, tmp_path: Path) -> None:
    edited = lesson.source.replace("title: Steps and checks", "title: Steps, exported")
    assert post(alice, lesson, edited).context["saved"]
    out = tmp_path / "exported"
    call_command("lessons", "export", "--to", str(out), "fixture-steps", stdout=StringIO())
    (out / "steps.md").write_text(edited.replace("Steps, exported", "Steps, changed in git"), encoding="utf-8")
    call_command("lessons", "load", str(out / "steps.md"), stdout=StringIO(), stderr=StringIO())
    assert Lesson.objects.get(pk=lesson.pk).title == "Steps, changed in git"
