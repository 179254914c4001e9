"""Presentation: one front end (plain ES modules in ``static/``) behind three doors.

- :mod:`.data`: an :class:`~blocklens.explain.Explanation` -> the JSON document every view reads;
- :mod:`.report`: a self-contained HTML file (data, pictures and scripts inline; opens from file://);
- :mod:`.notebook`: the same report inline in Jupyter, VS Code or Colab (an isolated iframe, no extension);
- :mod:`.server`: the local web app (FastAPI), which adds uploads, model and layer choice, and rendering with
  progress.
"""
