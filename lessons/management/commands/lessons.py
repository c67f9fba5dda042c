"""`manage.py lessons check|load [PATH...]`, `prove [ID...]`, `export [--to DIR] [ID...]`.

Validate lesson files and load them all or none; prove their solutions pass their checks; write
the sources stored in the database (edited in the browser) back to files, so git stays the source
of truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lessons.loader import lessons_check
from lessons.models import Lesson
from lessons.services import lessons_export, lessons_load


class Command(BaseCommand):
    help = "Check or load lesson files (Markdown with YAML front matter)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (("check", "report every error in the lesson files"),
                           ("load", "validate all lesson files, then upsert them by id")):
            p = sub.add_parser(name, help=text)
            p.add_argument("paths", nargs="*", type=Path,
                           help="files or directories (default: lessons/content)")
            if name == "load":
                p.add_argument("--force", action="store_true",
                               help="also overwrite lessons edited in the browser and not exported")
        prove = sub.add_parser("prove", help="run each lesson's lab and every step's solution; "
                                             "fail unless each step's check passes")
        prove.add_argument("ids", nargs="*", help="lesson ids (default: every lesson with a lab and steps)")
        prove.add_argument("--timeout", type=float, default=30.0, help="seconds a step's check may take")
        export = sub.add_parser("export", help="write each lesson's stored source (and translations) back to files")
        export.add_argument("ids", nargs="*", help="lesson ids (default: every lesson)")
        export.add_argument("--to", type=Path, default=None, help="directory (default: lessons/content)")

    def handle(self, *args: Any, action: str, paths: list[Path] | None = None, **options: Any) -> None:
        if action == "prove":
            self._prove(options["ids"], timeout=options["timeout"])
            return
        if action == "export":
            self._export(options["ids"], to=options["to"] or Path(settings.BASE_DIR) / "lessons" / "content")
            return
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
        for lesson, created in lessons_load(lessons=lessons, force=options.get("force", False)):
            if lesson.edited_in_browser:
                self.stderr.write(f"kept {lesson.slug}: edited in the browser and not exported; run "
                                  f"`manage.py lessons export {lesson.slug}` to keep the edit in git, "
                                  "or `lessons load --force` to discard it")
                continue
            runnable = "runnable" if lesson.runnable else "no lab yet"
            self.stdout.write(f"{'created' if created else 'updated'} {lesson.slug} (stage {lesson.stage}, {runnable})")

    def _prove(self, ids: list[str], *, timeout: float) -> None:
        """Prove the shipped lesson files (git is the source of truth), not the database."""
        import asyncio

        from lessons.prove import prove_again, prove_steps

        lessons, errors = lessons_check([Path(settings.BASE_DIR) / "lessons" / "content"], relative_to=Path.cwd())
        for error in errors:
            self.stderr.write(str(error))
        if errors:
            raise CommandError(f"{len(errors)} error(s) in lesson files; nothing was proved")
        by_id = {lesson.slug: lesson for lesson in lessons}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise CommandError(f"no such lesson: {', '.join(unknown)}")
        chosen = [by_id[i] for i in ids] if ids else lessons
        failed = proved = 0
        for lesson in chosen:
            steps = getattr(lesson, "steps", None) or []
            if lesson.topology is None or not steps:
                if ids:
                    failed += 1
                    self.stderr.write(f"{lesson.slug}: FAIL (it has no lab or no steps to prove)")
                continue
            self.stdout.write(f"{lesson.slug}: proving {len(steps)} step(s)")
            for attempt in (1, 2):
                results = asyncio.run(prove_steps(
                    lesson.topology, steps, step_timeout=timeout,
                    report=lambda result, slug=lesson.slug: self.stdout.write(f"  {slug}/{result}")))
                if attempt == 2 or not prove_again(results):
                    break
                # A step failed only while another process held the CPU: once more, from the start.
                self.stdout.write(f"{lesson.slug}: every failed step ran on a busy machine; proving it again")
            failed += sum(r.outcome == "FAIL" for r in results)
            proved += 1
        if failed:
            raise CommandError(f"{failed} step(s) failed")
        self.stdout.write(f"{proved} lesson(s) proved")

    def _export(self, ids: list[str], *, to: Path) -> None:
        lessons = list(Lesson.objects.filter(slug__in=ids) if ids else Lesson.objects.all())
        unknown = sorted(set(ids) - {lesson.slug for lesson in lessons})
        if unknown:
            raise CommandError(f"no such lesson: {', '.join(unknown)}")
        if not lessons:
            raise CommandError("no lessons in the database (run `manage.py lessons load` first)")
        try:
            written = lessons_export(lessons=lessons, to=to)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for path in written:
            self.stdout.write(f"wrote {path}")
        self.stdout.write(f"{len(lessons)} lesson(s) exported to {to}; check them with `manage.py lessons check {to}`")
