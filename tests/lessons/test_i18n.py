"""English and Bulgarian: the pages follow the language cookie, the switcher remembers the choice,
and the Bulgarian catalogs are complete and compiled (the .mo files are committed: CI has no msgfmt)."""

from __future__ import annotations

import ast
import gettext
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation

from core.engine.kinds import EVENTS
from core.engine.telemetry import EVENT_KINDS
from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_load
from lessons.templatetags.lesson_i18n import localized

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(settings.BASE_DIR)
LC_MESSAGES = ROOT / "locale" / "bg" / "LC_MESSAGES"
DOMAINS = ["django", "djangojs"]


@pytest.fixture
def lessons(db: None) -> list[Lesson]:
    data, errors = lessons_check([FIXTURES / "later.md", FIXTURES / "valid.md"])
    assert not errors
    return [lesson for lesson, _ in lessons_load(lessons=data)]


def bulgarian(client: Client) -> Client:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "bg"
    return client


# ---- pages ------------------------------------------------------------------------------------


def test_pages_are_english_by_default(client: Client, lessons: list[Lesson]) -> None:
    html = client.get("/stage/fixture-single/").content.decode()
    assert '<html lang="en">' in html
    assert ">Start lab</button>" in html


def test_the_home_page_speaks_bulgarian_with_the_cookie(client: Client, lessons: list[Lesson]) -> None:
    html = bulgarian(client).get("/").content.decode()
    assert '<html lang="bg">' in html
    assert "Мащабиране от един потребител до милиони" in html
    assert "Към лабораторията" in html  # "Open lab"
    assert "Open lab" not in html


def test_the_stage_page_speaks_bulgarian_with_the_cookie(client: Client, lessons: list[Lesson]) -> None:
    html = bulgarian(client).get("/stage/fixture-single/").content.decode()
    assert '<html lang="bg">' in html
    assert ">Стартирай лабораторията</button>" in html
    assert "Пропускателна способност и латентност" in html
    # The JavaScript catalog comes before the lab's modules, which call gettext() as they load.
    assert html.index('src="/jsi18n/"') < html.index("js/lab/main.js")


def event_texts(html: str) -> dict:
    data = re.search(r'<script id="event-texts" type="application/json">(.*?)</script>', html, re.S)
    assert data, "the stage page carries no event texts"
    return json.loads(data.group(1))


def test_the_event_log_words_every_engine_event_in_the_page_language(client: Client, lessons: list[Lesson]) -> None:
    english = event_texts(client.get("/stage/fixture-single/").content.decode())
    bulgarian_ = event_texts(bulgarian(client).get("/stage/fixture-single/").content.decode())
    assert set(english) == set(bulgarian_) == EVENT_KINDS  # exactly what the engine emits
    assert english["node_killed"] == {"text": "%(node)s killed"}
    assert bulgarian_["node_killed"] == {"text": "%(node)s е убит"}
    assert bulgarian_["node_slowed"]["otherwise"] == ["ms", "%(node)s отново работи с нормална скорост"]
    for kind in EVENT_KINDS:  # every text and its alternative is translated
        assert bulgarian_[kind]["text"] != english[kind]["text"], kind
        if "otherwise" in english[kind]:
            assert bulgarian_[kind]["otherwise"][1] != english[kind]["otherwise"][1], kind


def test_the_front_end_names_no_event_kind_of_its_own() -> None:
    # The event log is built from the engine's declarations: no list of event kinds to drift.
    panel = (ROOT / "static" / "js" / "lab" / "panel.js").read_text()
    named = {kind for kind in EVENT_KINDS | {"node_down", "node_up", "lab_stopped"} if f'"{kind}"' in panel}
    assert not named


def test_every_engine_text_is_in_the_catalog() -> None:
    known = {e.msgid for e in messages("django")}
    texts = [t for e in EVENTS.values() for t in (e.text, *(e.otherwise[1:] if e.otherwise else ()))]
    missing = [t for t in texts if t not in known]
    assert not missing, "add them to the django.po, translate, compilemessages:\n" + "\n".join(missing)


def test_the_switcher_shows_both_languages_and_marks_the_current_one(client: Client, lessons: list[Lesson]) -> None:
    html = bulgarian(client).get("/stage/fixture-single/").content.decode()
    start = html.index('<form class="lang-switch"')
    switcher = html[start:html.index("</form>", start)]
    assert 'action="/i18n/setlang/"' in switcher
    assert 'name="next" value="/stage/fixture-single/"' in switcher
    assert re.search(r'value="bg"[^>]*aria-pressed="true"[^>]*>БГ', switcher)
    assert re.search(r'value="en"[^>]*aria-pressed="false"[^>]*>EN', switcher)


def test_set_language_remembers_the_choice_and_goes_back(client: Client, lessons: list[Lesson]) -> None:
    response = client.post("/i18n/setlang/", {"language": "bg", "next": "/stage/fixture-single/"})
    assert response.status_code == 302
    assert response["Location"] == "/stage/fixture-single/"  # no language prefix: stage URLs are stable
    cookie = response.cookies[settings.LANGUAGE_COOKIE_NAME]
    assert cookie.value == "bg"
    assert int(cookie["max-age"]) >= 30 * 24 * 3600  # remembered across browser restarts
    assert '<html lang="bg">' in client.get("/").content.decode()

    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert '<html lang="en">' in client.get("/").content.decode()


def test_the_javascript_catalog_is_bulgarian_with_the_cookie(client: Client) -> None:
    js = bulgarian(client).get("/jsi18n/").content.decode()
    assert "\\u0423\\u0431\\u0438\\u0439" in js or "Убий" in js  # "Kill", in the node menu


def test_lesson_text_follows_the_language_when_the_lesson_has_it(client: Client, lessons: list[Lesson]) -> None:
    lesson = lessons[0]
    lesson.i18n = {"bg": {"title": "Един сървър", "summary": ""}}
    with translation.override("bg"):
        assert localized(lesson, "title") == "Един сървър"
        assert localized(lesson, "summary") == lesson.summary  # empty: falls back to English
    with translation.override("en"):
        assert localized(lesson, "title") == lesson.title


# ---- catalogs ---------------------------------------------------------------------------------


@dataclass
class Entry:
    msgctxt: str | None
    msgid: str
    msgid_plural: str | None
    msgstr: list[str]
    flags: set[str]


def read_po(path: Path) -> list[Entry]:
    """A small .po reader: entries separated by blank lines; no obsolete (#~) entries expected."""
    entries = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        flags: set[str] = set()
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            if line.startswith("#,"):
                flags |= {f.strip() for f in line[2:].split(",")}
            elif line.startswith("#~"):
                raise AssertionError(f"{path.name}: obsolete entry left in: {block!r}")
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[key].append(ast.literal_eval(line))
            else:
                key, _, rest = line.partition(" ")
                fields[key] = [ast.literal_eval(rest)]
        text = {k: "".join(v) for k, v in fields.items()}
        plural = sorted(k for k in text if k.startswith("msgstr["))
        entries.append(Entry(
            msgctxt=text.get("msgctxt"),
            msgid=text["msgid"],
            msgid_plural=text.get("msgid_plural"),
            msgstr=[text[k] for k in plural] if plural else [text["msgstr"]],
            flags=flags,
        ))
    return entries


def messages(domain: str) -> list[Entry]:
    return [e for e in read_po(LC_MESSAGES / f"{domain}.po") if e.msgid]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_message_has_a_bulgarian_translation(domain: str) -> None:
    entries = read_po(LC_MESSAGES / f"{domain}.po")
    header = entries[0]
    assert header.msgid == "" and "Language: bg\n" in header.msgstr[0]
    assert len(entries) > 10
    for e in entries:
        assert "fuzzy" not in e.flags, f"fuzzy entry: {e.msgid!r}"
        assert all(s.strip() for s in e.msgstr), f"untranslated: {e.msgid!r}"
        if e.msgid_plural:
            assert len(e.msgstr) == 2, f"Bulgarian has two plural forms: {e.msgid!r}"
        for source, translated in zip([e.msgid, e.msgid_plural or e.msgid], e.msgstr, strict=False):
            placeholders = sorted(re.findall(r"%\(\w+\)s", source))
            assert sorted(re.findall(r"%\(\w+\)s", translated)) == placeholders, f"placeholders differ: {e.msgid!r}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_compiled_catalog_matches_the_po_file(domain: str) -> None:
    """The .mo is what Django serves: recompile (manage.py compilemessages) after editing a .po."""
    with open(LC_MESSAGES / f"{domain}.mo", "rb") as fh:
        mo = gettext.GNUTranslations(fh)
    for e in messages(domain):
        if e.msgid_plural:
            got = [mo.npgettext(e.msgctxt, e.msgid, e.msgid_plural, n) if e.msgctxt
                   else mo.ngettext(e.msgid, e.msgid_plural, n) for n in (1, 5)]
        else:
            got = [mo.pgettext(e.msgctxt, e.msgid) if e.msgctxt else mo.gettext(e.msgid)]
        assert got == e.msgstr, f"{domain}.mo is stale for {e.msgid!r}: run manage.py compilemessages"


# Literal strings the sources mark for translation, so a new string without its .po entry fails here
# (CI has no xgettext to re-run makemessages). Simple forms only: "…" literals, joined by `+`.
_STR = r'"(?:[^"\\]|\\.)*"'
_JS_CALL = re.compile(
    rf"\b(?P<fn>gettext|gettext_noop|pgettext|ngettext)\(\s*(?P<args>{_STR}(?:\s*[+,]\s*{_STR})*)")
_TEMPLATE_TAG = re.compile(r'{%\s*(?:translate|trans)\s+"(?P<msgid>[^"]+)"(?:\s+context\s+"(?P<ctx>[^"]+)")?')


def _js_args(args: str) -> list[str]:
    """The call's literal arguments, with "a" + "b" joined."""
    out = [""]
    for token in re.findall(rf"{_STR}|,", args):
        if token == ",":
            out.append("")
        else:
            out[-1] += ast.literal_eval(token)
    return out


def test_every_javascript_string_is_in_the_catalog() -> None:
    known = {(e.msgctxt, e.msgid) for e in messages("djangojs")}
    missing = []
    for path in sorted((ROOT / "static" / "js").rglob("*.js")):
        for m in _JS_CALL.finditer(path.read_text(encoding="utf-8")):
            args = _js_args(m["args"])
            key = (args[0], args[1]) if m["fn"] == "pgettext" else (None, args[0])
            if key not in known:
                missing.append(f"{path.name}: {key}")
    assert not missing, "run makemessages -d djangojs -l bg, translate, compilemessages:\n" + "\n".join(missing)


def test_every_template_string_is_in_the_catalog() -> None:
    known = {(e.msgctxt, e.msgid) for e in messages("django")}
    missing = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        for m in _TEMPLATE_TAG.finditer(path.read_text(encoding="utf-8")):
            if (m["ctx"], m["msgid"]) not in known:
                missing.append(f"{path.name}: {m['msgid']!r}")
    assert not missing, "run makemessages -l bg, translate, compilemessages:\n" + "\n".join(missing)
