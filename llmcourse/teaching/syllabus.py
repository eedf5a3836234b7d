"""The syllabus (`curriculum/syllabus.yaml`): the one list of weeks, notebooks, runtimes and exercise points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = ["SYLLABUS", "Exercise", "Notebook", "load_syllabus", "notebook_entry", "project_root"]

SYLLABUS = Path("curriculum") / "syllabus.yaml"  # a course folder's syllabus, relative to that folder


@dataclass(frozen=True)
class Exercise:
    id: str
    points: float = 1.0


@dataclass(frozen=True)
class Notebook:
    path: str
    title: str
    week: int
    runtime_min: float
    assets: tuple[str, ...] = ()
    exercises: tuple[Exercise, ...] = field(default_factory=tuple)

    @property
    def max_points(self) -> float:
        return sum(e.points for e in self.exercises)


def project_root() -> Path:
    """The course folder (where curriculum/ lives), for a source checkout."""
    here = Path(__file__).resolve().parents[2]
    if (here / SYLLABUS).exists():
        return here
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / SYLLABUS).exists():
            return folder
    raise ConfigError("curriculum/syllabus.yaml not found: run from the course folder (a clone of the repository).")


def load_syllabus(path: str | Path | None = None) -> dict:
    """The parsed syllabus: {'course', 'repository', 'weeks': [...], 'notebooks': [Notebook, ...]}."""
    import yaml

    path = Path(path) if path else project_root() / SYLLABUS
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    notebooks = []
    for week in data.get("weeks", []):
        for nb in week.get("notebooks", []):
            exercises = tuple(Exercise(str(e["id"]), float(e.get("points", 1))) for e in nb.get("exercises") or [])
            notebooks.append(Notebook(path=nb["path"], title=nb["title"], week=int(week["week"]),
                                      runtime_min=float(nb["runtime_min"]), assets=tuple(nb.get("assets") or []),
                                      exercises=exercises))
    data["notebooks"] = notebooks
    return data


def notebook_entry(path: str | Path, syllabus: dict | None = None) -> Notebook:
    """The syllabus entry of one notebook, by its path relative to the course folder (e.g. week01/02_x.ipynb)."""
    syllabus = syllabus or load_syllabus()
    key = Path(path).as_posix()
    for nb in syllabus["notebooks"]:
        if nb.path == key or key.endswith("/" + nb.path) or Path(nb.path).name == Path(key).name:
            return nb
    raise ConfigError(f"{key} is not in curriculum/syllabus.yaml. Fix: check the path, or add it there (path, title, "
                      "runtime_min, exercises).")
