"""The page: one front end (plain ES modules in ``static/``) and the documents built from it, for every view.

- :mod:`.data`: an :class:`~blocklens.explain.Explanation` -> the JSON document every view reads;
- :mod:`.report`: a self-contained HTML file (data, pictures and scripts inline; opens from file://);
- :mod:`.notebook`: the same report inline in Jupyter, VS Code or Colab (an isolated iframe, no extension);
- :mod:`.bundle`: the ES modules as one classic script, for pages that cannot load modules by URL.

These take plain results (duck-typed) and import nothing above the icons, so results (explain, the atlas) can show
themselves with them; the local web app that serves the same front end is :mod:`blocklens.app`, at the top.
"""
