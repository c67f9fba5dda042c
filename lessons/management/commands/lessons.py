"""`manage.py lessons check|load [PATH...]`: validate lesson files, and load them all or none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lessons.loader import lessons_check
from lessons.services import lessons_load


class Command(BaseCommand):
    help = "Check or load lesson files (Markdown with YAML front matter)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (("check", "report every error in the lesson files"),
                           ("load", "validate all lesson files, then upsert them by id")):
            p = sub.add_parser(name, help=text)
            p.add_argument("paths", nargs="*", type=Path,
                           help="files or directories (default: lessons/content)")

    def handle(self, *args: Any, action: str, paths: list[Path], **options: Any) -> None:
        paths = paths or [Path(settings.BASE_DIR) / "lessons" / "content"]
        lessons, errors = lessons_check(paths, relative_to=Path.cwd())
        for error in errors:
            self.stderr.write(str(error))
        if errors:
            raise CommandError(f"{len(errors)} error(s) in lesson files; nothing was loaded"
                               if action == "load" else f"{len(errors)} error(s) in lesson files")
        if not lessons:
            raise CommandError(f"no lesson files found in {', '.join(map(str, paths))}")
        if action == "check":
            self.stdout.write(f"{len(lessons)} lesson file(s) OK")
            return
        for lesson, created in lessons_load(lessons=lessons):
            runnable = "runnable" if lesson.runnable else "no lab yet"
            self.stdout.write(f"{'created' if created else 'updated'} {lesson.slug} (stage {lesson.stage}, {runnable})")
