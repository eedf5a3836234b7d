"""Instructor and maintainer tooling: student copies (`release`), grading by stage (`grading`), the sandbox that runs
a submission (`sandbox`), badges, the syllabus, the course runner, and the notebook conventions they share
(`notebooks`). Learners never need to import anything from here; run these through the `llmcourse` command.
"""
