"""nbgrader's settings for the course's assignments (https://nbgrader.readthedocs.io).

Run nbgrader from this folder: `nbgrader generate_assignment 01_low_rank`,
`nbgrader autograde 01_low_rank`, `nbgrader export`. The teacher's guide (docs/teaching.md) walks
through them.
"""

c = get_config()  # noqa: F821 (nbgrader defines it)

c.CourseDirectory.course_id = "lorakit"
# Every cell of a student's notebook may run this long when graded; a cell that runs longer is
# stopped, marked as an error, and the grader goes on with the next cell. Assignment 4's training
# cell is the longest: about two minutes on a 2-core laptop, so five minutes leave room for a
# slower machine.
c.ExecutePreprocessor.timeout = 300
c.ExecutePreprocessor.interrupt_on_timeout = True
# What a student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# What a solution trains and caches under `runs/` (assignment 5's LoRAs) stays with the teacher:
# generate_assignment neither hands it out nor copies it back.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "runs"]
