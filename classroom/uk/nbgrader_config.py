"""nbgrader's settings for the Ukrainian assignments: the course's (../nbgrader_config.py), with
what a student sees in place of a solution in Ukrainian.

Run nbgrader from this folder: `nbgrader generate_assignment 01_low_rank` makes
`release/01_low_rank/` from `source/01_low_rank/` (built by `make translations` from the English
source and translations/uk/classroom/01_low_rank.po). docs/uk/teaching.md walks through the rest.
"""

import os

c = get_config()  # noqa: F821 (nbgrader defines it)
load_subconfig(os.path.join(os.path.dirname(__file__), os.pardir, "nbgrader_config.py"))  # noqa: F821

c.CourseDirectory.course_id = "lorakit-uk"
c.ClearSolutions.code_stub = {"python": "# ВАШ КОД ТУТ\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "ВАША ВІДПОВІДЬ ТУТ"
