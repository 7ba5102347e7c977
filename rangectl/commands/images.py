"""`rangectl images build|ls|prune`: the node images, built offline from a debootstrap base."""

from __future__ import annotations

import threading
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rangectl.errors import RangeError

app = typer.Typer(
    help="Node images: build them (offline, from a debootstrap base), list them, prune old ones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)

BASE_IMAGE_HELP = (
    "Build the base from this image already in the engine (Debian 12 with apt) instead of debootstrap. "
    "Default: $RANGECTL_BASE_IMAGE."
)


def _client():
    from rangectl.backend.engine import client

    return client()


def _fail(exc: RangeError) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(getattr(exc, "exit_code", 1) or 1)


class _Reporter:
    """One line per image: a live progress table on a terminal, plain lines otherwise (CI logs)."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.lock = threading.Lock()
        self.tasks: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.fields[recipe]:<12}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()

    def __call__(self, recipe: str, phase: str, detail: str = "") -> None:
        with self.lock:
            if self.live:
                self._live(recipe, phase, detail)
            else:
                self._plain(recipe, phase, detail)

    def _live(self, recipe: str, phase: str, detail: str) -> None:
        tid = self.tasks.get(recipe)
        if tid is None:
            tid = self.progress.add_task("", recipe=recipe, total=1)
            self.tasks[recipe] = tid
        text = {
            "cached": f"[green]up to date[/green] {escape(detail)}",
            "building": f"building {escape(detail)}",
            "step": escape(_clip(detail, 90)),
            "done": f"[green]built[/green] {escape(detail)}",
            "failed": "[red]failed[/red]",
        }.get(phase, escape(detail))
        finished = phase in ("cached", "done", "failed")
        self.progress.update(tid, description=text, completed=1 if finished else 0)
        if finished:
            self.progress.stop_task(tid)

    def _plain(self, recipe: str, phase: str, detail: str) -> None:
        if phase == "building":
            self.started[recipe] = time.monotonic()
        text = {
            "cached": f"up to date {detail}",
            "building": f"building {detail}",
            "step": _clip(detail, 110),
            "done": f"built {detail}",
            "failed": "FAILED",
        }.get(phase, detail)
        self.console.print(f"{recipe:<12} {escape(text)}", highlight=False, soft_wrap=True)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


@app.command("build")
def build(
    names: list[str] = typer.Argument(
        None, help="Recipes to build (default: all). 'base' builds the base only."
    ),
    base_image: str = typer.Option(None, "--base-image", metavar="NAME", help=BASE_IMAGE_HELP),
    force: bool = typer.Option(
        False, "--force", help="Rebuild even when the image for the current hash exists."
    ),
) -> None:
    """Build the images whose recipe changed or that are missing; a no-op when all are current."""
    from rangectl.backend.images import ImageBuildError, build_images

    t0 = time.monotonic()
    try:
        client = _client()
        with _Reporter(out) as rep:
            refs = build_images(client, names or None, base_image=base_image, force=force, on_progress=rep)
    except ImageBuildError as exc:
        if exc.log_tail:
            err.print(f"[dim]--- last lines of the {escape(exc.recipe or 'build')} log ---[/dim]")
            for line in exc.log_tail[-20:]:
                err.print(f"[dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)
        raise _fail(exc) from None
    except RangeError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    out.print(f"{len(refs)} image(s) ready in {time.monotonic() - t0:.1f}s", highlight=False)


@app.command("ls")
def ls(
    base_image: str = typer.Option(None, "--base-image", metavar="NAME", help=BASE_IMAGE_HELP),
) -> None:
    """List the recipes, the image each makes now, and whether it is built."""
    from rangectl.backend.images import image_table

    client = None
    try:
        client = _client()
    except RangeError as exc:
        err.print(f"[yellow]warning:[/yellow] {escape(str(exc))}", soft_wrap=True)
    try:
        rows = image_table(client, base_image=base_image)
    except RangeError as exc:
        raise _fail(exc) from None
    t = Table(title=None, show_edge=False)
    t.add_column("recipe")
    t.add_column("ref")
    t.add_column("built?")
    t.add_column("size", justify="right")
    for r in rows:
        built = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "?"}[r["built"]]
        size = f"{r['size'] / 1e6:.0f} MB" if r["size"] else "-"
        t.add_row(r["recipe"], r["ref"], built, size)
    out.print(t)
    if client is not None and any(r["built"] is False for r in rows):
        opt = f" --base-image {base_image}" if base_image else ""
        out.print(f"build the missing ones with `rangectl images build{opt}`", highlight=False)


@app.command("prune")
def prune(
    base_image: str = typer.Option(None, "--base-image", metavar="NAME", help=BASE_IMAGE_HELP),
) -> None:
    """Remove rangectl images that no current recipe makes (old hashes)."""
    from rangectl.backend.images import prune_images

    try:
        removed, kept = prune_images(_client(), base_image=base_image)
    except RangeError as exc:
        raise _fail(exc) from None
    for tag in removed:
        out.print(f"removed {tag}", highlight=False)
    for tag in kept:
        out.print(f"kept {tag} (a container uses it)", highlight=False)
    out.print(f"{len(removed)} removed, {len(kept)} kept", highlight=False)
